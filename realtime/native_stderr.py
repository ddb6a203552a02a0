"""Filters the start-up chatter native libraries write straight to file descriptor 2.

MediaPipe's TFLite and absl print INFO/WARNING lines from C++ when a FaceMesh graph starts (an
XNNPACK delegate note, the absl pre-initialisation notice, feedback-tensor and NORM_RECT warnings);
their environment switches (GLOG_minloglevel, TF_CPP_MIN_LOG_LEVEL) no longer silence them. Around
such a start, ``quiet_native_chatter()`` sends fd 2 to a temporary file and writes back every line
that is not one of those notes: errors, and anything Python logged meanwhile, still appear.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator

# INFO/WARNING lines from TFLite and absl (glog format: "I0000 ..." / "W0000 ..."); E and F stay.
CHATTER = re.compile(rb"^(?:INFO: Created TensorFlow Lite|WARNING: All log messages before absl::InitializeLog"
                     rb"|[IW]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\])")
_lock = threading.Lock()  # fd 2 is one per process: one redirection at a time


@contextlib.contextmanager
def quiet_native_chatter() -> Iterator[None]:
    if os.environ.get("SYNCVID_NATIVE_LOGS") == "1":  # show them (debugging the native side)
        yield
        return
    with _lock, tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            kept = [line for line in sink.read().splitlines(keepends=True) if not CHATTER.match(line)]
            if kept:
                os.write(2, b"".join(kept))
