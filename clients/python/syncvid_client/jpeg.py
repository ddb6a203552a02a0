"""JPEG decoding to RGB with whichever library is installed: Pillow first, then OpenCV.

Neither is a dependency of the client (``pip install syncvid-client[jpeg]`` adds Pillow); without
both, frames keep their JPEG bytes and no ``image``. The decoder is looked up once, on first use.
"""

from __future__ import annotations

import functools
import io
import logging
from collections.abc import Callable

import numpy as np

log = logging.getLogger(__name__)

JpegDecoder = Callable[[bytes], np.ndarray]


def decode_with_pillow(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def decode_with_opencv(data: bytes) -> np.ndarray:
    import cv2

    try:
        bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise ValueError(f"OpenCV could not decode the JPEG image: {exc}") from None
    if bgr is None:
        raise ValueError("OpenCV could not decode the JPEG image")
    return np.ascontiguousarray(bgr[:, :, ::-1])


@functools.lru_cache(maxsize=1)
def find_jpeg_decoder() -> JpegDecoder | None:
    """Pillow's decoder, else OpenCV's, else None (the caller keeps the JPEG bytes)."""
    for module, decoder in (("PIL.Image", decode_with_pillow), ("cv2", decode_with_opencv)):
        try:
            __import__(module)
        except ImportError:
            continue
        return decoder
    log.warning("neither Pillow nor OpenCV is installed: frames carry JPEG bytes but no decoded image "
                "(pip install 'syncvid-client[jpeg]')")
    return None
