"""Decoding one image (PNG, JPEG, WebP, GIF) into an RGB array with Pillow.

Orientation and transparency are settled here, so every encoder sees the same upright, opaque
picture: the EXIF orientation tag is applied, and an alpha channel (or a palette's transparent
colour) is composited onto white, the background a viewer shows. An animated GIF or WebP gives its
first frame.
"""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from encoders.config import MediaLimits
from encoders.media.errors import MediaError, corrupt, too_large, unsupported
from encoders.media.mime import resolve_mime

# Pillow plugin names of the formats we decode, by canonical mime type.
PILLOW_FORMATS = {
    "image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP", "image/gif": "GIF",
}
_BACKGROUND = (255, 255, 255)
# What Pillow raises on damaged or truncated files (SyntaxError for malformed PNG chunks).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError)


def decode_image(data: bytes, limits: MediaLimits, mime: str | None = None,
                 item_id: str | None = None) -> np.ndarray:
    """Decodes an image to an upright, opaque RGB array.

    Returns: uint8 [H, W, 3] (H and W after the EXIF rotation).
    `mime`, when given, must be an image type that is supported; the bytes then decide which of
    the four formats they are. The pixel limit is checked on the size in the header, before any
    pixel is decoded. Raises MediaError: media_too_large (bytes or pixels over the limits),
    unsupported_media (mime type), corrupt_media (bytes that are not a whole image of a supported
    format). Does not modify `data`.
    """
    if len(data) > limits.max_image_bytes:
        raise too_large(f"the image is {len(data)} bytes, over the limit of "
                        f"{limits.max_image_bytes}", item_id)
    if mime is not None:
        resolve_mime("image", mime, data, item_id)
    try:
        with _open(data, limits, item_id) as image:
            image.load()
            return _to_rgb(ImageOps.exif_transpose(image))
    except MediaError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # Pillow's own guard above Image.MAX_IMAGE_PIXELS, which the limit never exceeds: the
        # warning is raised only where warnings are errors; elsewhere it is printed, and the
        # size check in _open refuses the image.
        raise too_large(f"the image is a decompression bomb: {error}", item_id) from None
    except _DECODE_ERRORS as error:
        raise corrupt(f"the image does not decode: {_describe(error)}", item_id) from None


def _open(data: bytes, limits: MediaLimits, item_id: str | None) -> Image.Image:
    """Image.open reads only the header; the size is checked before anything is decoded."""
    try:
        image = Image.open(io.BytesIO(data), formats=tuple(PILLOW_FORMATS.values()))
    except UnidentifiedImageError:
        raise corrupt("the bytes are not a PNG, JPEG, WebP or GIF image", item_id) from None
    if image.format not in PILLOW_FORMATS.values():
        image.close()
        raise unsupported(f"image format {image.format} is not supported", item_id)
    width, height = image.size
    if width * height > limits.max_image_pixels:
        image.close()
        raise too_large(f"the image is {width}x{height} = {width * height} pixels, over the limit "
                        f"of {limits.max_image_pixels}", item_id)
    if width == 0 or height == 0:
        image.close()
        raise corrupt(f"the image is {width}x{height}", item_id)
    return image


def _to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grey: Pillow's convert("RGB") would clip at 255 instead of scaling.
        grey = (np.asarray(image, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    has_alpha = "A" in image.mode or "a" in image.mode or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        image = Image.alpha_composite(background, rgba)
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(array)  # [H, W, 3]


def _describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text[:200]
