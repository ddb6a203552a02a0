"""``syncvid vcam``: the avatar as a virtual camera, lips on a microphone or a file, the voice
optionally played (delayed like the video) to an output device.

Parts: ``timeline`` (sans I/O: which input packet, engine slot, camera frame and output samples are
due, on the session's one clock), ``inputs`` (a file paced in real time), ``sound`` (PortAudio
through sounddevice: microphone, speaker, device checks), ``camera`` (pyvirtualcam: open, errors,
resizing, device listing) and ``runner`` (the ``LiveSession`` between them). See docs/vcam.md.
"""

from realtime.errors import SyncVidError


class VcamError(SyncVidError, RuntimeError):
    """The virtual camera cannot start (no v4l2loopback device, no PortAudio, no microphone, a busy
    device); the message is one sentence saying what to do."""
