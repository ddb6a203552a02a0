"""Checking an uploaded photo before anything trusts it, sans I/O: bytes in, RGB pixels out.

In order: the byte count; the format, from the file's first bytes (JPEG, PNG and WebP only, so
no other decoder ever sees an upload); the pixel count the header declares, before decoding (a
few kB of PNG can declare 50000 x 50000 pixels, 7.5 GB decoded); then the decode itself, which
must consume a complete image. The result is upright (EXIF orientation applied) RGB, alpha dropped.
Finding the face is the avatar preparation's job (``realtime.face.prepare``), not this module's.
"""

from __future__ import annotations

import io
import logging
import re
import warnings

import numpy as np

log = logging.getLogger(__name__)

ACCEPTED = "JPEG, PNG or WebP"
# magic bytes -> Pillow format name of the accepted formats
_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"))
# formats recognised only to name them in the refusal
_OTHER_MAGIC = ((b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
                (b"\x00\x00\x01\x00", "ICO"), (b"8BPS", "PSD"), (b"%PDF", "PDF"), (b"<svg", "SVG"), (b"<?xml", "SVG"))
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}", re.ASCII)
RESERVED_NAMES = frozenset({"default"})  # the server's own avatar


class UploadRejected(ValueError):
    """An upload refused, with a short ``code`` for clients ("too_large", "not_an_image",
    "truncated", "too_many_pixels", "unsupported_format", "bad_name"; the server adds its own) and
    a one-sentence message naming what was wrong and what to do."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def sniff_format(head: bytes) -> str | None:
    """The accepted format (Pillow's name) the bytes start with, or None."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def _other_format(head: bytes) -> str | None:
    if head[4:8] == b"ftyp":  # ISO media: HEIC/AVIF photos, or an mp4
        return "HEIC/AVIF" if head[8:12] in (b"heic", b"heix", b"mif1", b"avif", b"heim", b"msf1") else "MP4"
    return next((name for magic, name in _OTHER_MAGIC if head.lstrip().startswith(magic)), None)


def check_image_upload(data: bytes, *, max_bytes: int, max_pixels: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an uploaded JPEG, PNG or WebP, or ``UploadRejected``."""
    from PIL import Image, UnidentifiedImageError  # Pillow loads its plugins on first use: imported here

    if len(data) > max_bytes:
        raise UploadRejected("too_large", f"the uploaded file is {len(data) / 1e6:.1f} MB, over the "
                             f"{max_bytes / 1e6:.1f} MB limit: send a smaller photo")
    if not data:
        raise UploadRejected("not_an_image", f"the uploaded file is empty: send a {ACCEPTED} photo of a face")
    fmt = sniff_format(data[:16])
    if fmt is None:
        other = _other_format(data[:16])
        if other is not None:
            raise UploadRejected("unsupported_format", f"the uploaded file is a {other} file, which is not accepted: "
                                 f"convert it to {ACCEPTED} and upload that")
        raise UploadRejected("not_an_image", f"the uploaded file is not an image ({ACCEPTED}): upload a photo of "
                             "a face")
    try:
        with warnings.catch_warnings():  # Pillow warns of large images: the limit below is ours
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=[fmt])  # reads the header only
    except Image.DecompressionBombError:  # Pillow's own limit (twice MAX_IMAGE_PIXELS)
        raise UploadRejected("too_many_pixels", f"the uploaded {fmt} image declares more than {max_pixels} pixels: "
                             "send a smaller photo") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
        raise UploadRejected("truncated", f"the uploaded {fmt} file is cut short or damaged ({_reason(e)}): "
                             "upload the complete file again") from None
    with im:
        w, h = im.size
        if w * h > max_pixels:
            raise UploadRejected("too_many_pixels", f"the uploaded {fmt} image is {w}x{h} pixels, over the limit of "
                                 f"{max_pixels} ({max_pixels / 1e6:g} megapixels): send a smaller photo")
        if w == 0 or h == 0:
            raise UploadRejected("not_an_image", f"the uploaded {fmt} image has no pixels ({w}x{h}): upload a photo "
                                 "of a face")
        try:
            im.load()  # a truncated file raises here (Pillow's LOAD_TRUNCATED_IMAGES stays off)
        except Exception as e:  # noqa: BLE001 - every decoder failure on user data is the same refusal
            raise UploadRejected("truncated", f"the uploaded {fmt} image is cut short or damaged and cannot be "
                                 f"decoded ({_reason(e)}): upload the complete file again") from None
        return _upright_rgb(im)


def _upright_rgb(im) -> np.ndarray:
    from PIL import ImageOps

    try:
        upright = ImageOps.exif_transpose(im)  # phone photos store their rotation in EXIF
    except Exception as e:  # noqa: BLE001 - a malformed EXIF block only loses the rotation
        log.debug("ignoring unreadable EXIF orientation (%s)", e)
        upright = im
    if upright.mode in ("I", "I;16", "I;16B", "I;16L"):  # 16-bit grey PNG: keep the top 8 bits
        grey = (np.asarray(upright, np.float32) / 257.0 + 0.5).clip(0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    return np.ascontiguousarray(np.asarray(upright.convert("RGB"), np.uint8))  # alpha and palette dropped


def _reason(e: BaseException) -> str:
    """The decoder's own words, one short line (never a traceback)."""
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text[:100]


def safe_avatar_name(name: str) -> str:
    """``name`` if it may name an uploaded avatar (1 to 64 of A-Z a-z 0-9 _ -, not "default"):
    a name is a file name in the library folder, so no dot, slash or other character that could
    lead outside it; else ``UploadRejected("bad_name")``."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        shown = ascii(name[:80]) if isinstance(name, str) else type(name).__name__
        raise UploadRejected("bad_name", f"avatar name {shown} is not allowed: use 1 to 64 letters, digits, "
                             "'_' or '-' (no dots, slashes or spaces)")
    if name.lower() in RESERVED_NAMES:
        raise UploadRejected("bad_name", f"avatar name {name!r} is the server's own avatar: pick another name")
    return name
