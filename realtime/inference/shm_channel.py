"""Large arrays between the server and the inference process through shared memory.

A rendered chunk is up to ``max_chunk`` full frames (512 x 512 x 3 = 768 KiB each) and an encoder
answer a few (50, 384) float32 blocks. Through a socket pipe such an answer takes several
wake-ups of both processes (the socket buffer holds ~200 KiB): 1.8 ms per round trip for one frame
and 4.7 ms for four on an idle 2-core machine, longer under load, against a 4 ms render. Here every
contiguous array of a message goes out of band (pickle protocol 5) into a shared-memory region that
belongs to one direction of one pipe, and only the small pickle goes through the pipe.

One request per pipe is in flight at a time (the caller blocks for its answer), so a region is never
written while its previous contents are still being read; the reader copies the arrays out before
answering or returning the pipe. A message whose arrays do not fit its region (a very large
avatar) or a machine without shared memory falls back to sending everything through the pipe.
"""

from __future__ import annotations

import logging
import pickle
from multiprocessing import shared_memory

log = logging.getLogger(__name__)

REQUEST_BYTES = 1 << 20  # audio blocks of a render chunk, encoder pushes
ANSWER_BYTES = 4 << 20  # a chunk of max_chunk (4) frames of 512 x 512 x 3
ALIGN = 64
IN_BAND, SHARED = b"I", b"S"


class Region:
    """One direction of one pipe. Created (with ``size``) by the server, which owns and unlinks it;
    the inference process attaches by ``name``. ``Region(0)``: no region, everything in band."""

    def __init__(self, size: int = 0, name: str | None = None) -> None:
        self.owner = name is None
        self.shm: shared_memory.SharedMemory | None = None
        if self.owner and size <= 0:  # the server had none: this pipe carries everything
            self.size = 0
            return
        try:
            self.shm = (
                shared_memory.SharedMemory(create=True, size=size) if self.owner
                else shared_memory.SharedMemory(name=name))
            if self.owner:
                _reserve(self.shm)
        except OSError as e:  # no /dev/shm (or no room): every message goes through the pipe
            if self.owner:
                log.warning("no shared memory for inference messages (%s); using the pipe only", e)
            self.shm = None
        self.size = self.shm.size if self.shm is not None else 0

    @property
    def name(self) -> str | None:
        return self.shm.name if self.shm is not None else None

    def pack(self, obj) -> bytes:
        """Bytes to send through the pipe; ``obj``'s contiguous arrays are written to the region."""
        if self.shm is None:
            return IN_BAND + pickle.dumps(obj, protocol=5)
        buffers: list[pickle.PickleBuffer] = []
        data = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
        views = [b.raw() for b in buffers]
        layout, off = [], 0
        for v in views:
            layout.append((off, v.nbytes))
            off += -(-v.nbytes // ALIGN) * ALIGN
        if off > self.size:
            return IN_BAND + pickle.dumps(obj, protocol=5)
        for (o, n), v in zip(layout, views):
            self.shm.buf[o : o + n] = v
        return SHARED + pickle.dumps((layout, data), protocol=5)

    def unpack(self, message: bytes):
        """The object ``pack`` was given; its arrays are copies (the region may be reused at once)."""
        if message[:1] == IN_BAND:
            return pickle.loads(memoryview(message)[1:])
        layout, data = pickle.loads(memoryview(message)[1:])
        return pickle.loads(data, buffers=[bytearray(self.shm.buf[o : o + n]) for o, n in layout])

    def close(self) -> None:
        shm, self.shm = self.shm, None
        if shm is None:
            return
        if self.owner:  # first: the name goes even if a late reader still holds a view
            try:
                shm.unlink()
            except FileNotFoundError:
                pass
        try:
            shm.close()
        except BufferError:  # a view still exported (a reader mid-copy at shutdown): freed with it
            pass


def _reserve(shm: shared_memory.SharedMemory) -> None:
    """Allocates the region's pages now: a tmpfs without room must fail here (OSError, then the
    pipe is used), not with SIGBUS at the first large message."""
    import os

    fd = getattr(shm, "_fd", -1)
    if fd < 0 or not hasattr(os, "posix_fallocate"):
        return
    try:
        os.posix_fallocate(fd, 0, shm.size)
    except OSError:
        shm.close()
        shm.unlink()
        raise
