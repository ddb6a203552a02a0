import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CODE = r"""
import os, logging
from realtime.native_stderr import quiet_native_chatter
logging.basicConfig(format="%(levelname)s %(message)s")
with quiet_native_chatter():
    os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
    os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
    os.write(2, b"W0000 00:00:1796659107.758607    5783 inference_feedback_manager.cc:114] Feedback manager\n")
    os.write(2, b"I0000 00:00:1796659107.758607    5783 gl_context.cc:357] GL version\n")
    os.write(2, b"E0000 00:00:1796659107.779732    5784 calculator_graph.cc:887] a real failure\n")
    logging.getLogger("x").warning("a python warning meanwhile")
os.write(2, b"after\n")
"""


def test_chatter_is_dropped_and_everything_else_kept_in_order():
    r = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 0
    assert r.stderr.splitlines() == [
        "E0000 00:00:1796659107.779732    5784 calculator_graph.cc:887] a real failure",
        "WARNING a python warning meanwhile",
        "after",
    ]


def test_chatter_shown_on_request():
    env = {"SYNCVID_NATIVE_LOGS": "1", "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, cwd=REPO, timeout=60, env=env)
    assert "INFO: Created TensorFlow Lite" in r.stderr and len(r.stderr.splitlines()) == 7
