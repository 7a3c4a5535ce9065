"""Image decoding (encoders/media/image.py): formats, orientation, transparency, limits, errors."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from encoders.config import PILLOW_MAX_IMAGE_PIXELS, MediaLimits
from encoders.media import MediaError, decode_image
from protocol.errors import CORRUPT_MEDIA, MEDIA_TOO_LARGE, UNSUPPORTED_MEDIA
from tests.encoders.media.samples import to_bytes

LIMITS = MediaLimits()
RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def _two_colour(size=(40, 20)) -> Image.Image:
    """Red in the left quarter, blue elsewhere."""
    image = Image.new("RGB", size, BLUE)
    image.paste(RED, (0, 0, size[0] // 4, size[1]))
    return image


def _close(pixel, colour, tolerance=12) -> bool:
    return bool(np.all(np.abs(pixel.astype(int) - np.array(colour)) <= tolerance))


@pytest.mark.parametrize("fmt, mime", [("PNG", "image/png"), ("JPEG", "image/jpeg"),
                                       ("WEBP", "image/webp"), ("GIF", "image/gif")])
def test_every_format_decodes_to_rgb_uint8(fmt, mime):
    image = decode_image(to_bytes(_two_colour(), fmt), LIMITS, mime=mime)
    assert image.shape == (20, 40, 3) and image.dtype == np.uint8
    assert _close(image[10, 2], RED) and _close(image[10, 30], BLUE)


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (16, 16), colour) for colour in (RED, BLUE, WHITE)]
    data = to_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert _close(decode_image(data, LIMITS)[8, 8], RED)


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: display rotated 90 degrees clockwise
    data = to_bytes(_two_colour(), "JPEG", exif=exif.tobytes(), quality=95)
    image = decode_image(data, LIMITS)
    assert image.shape == (40, 20, 3)  # upright: taller than wide
    assert _close(image[2, 10], RED) and _close(image[-2, 10], BLUE)  # left edge is now the top


def test_alpha_is_flattened_onto_white():
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent red
    rgba.paste((0, 0, 255, 255), (0, 0, 4, 8))  # opaque blue left half
    rgba.paste((255, 0, 0, 128), (4, 0, 6, 8))  # half transparent red
    image = decode_image(to_bytes(rgba, "PNG"), LIMITS)
    assert image.shape == (8, 8, 3)
    assert _close(image[0, 0], BLUE, 0) and _close(image[0, 7], WHITE, 0)
    assert _close(image[0, 4], (255, 127, 127), 1)


def test_palette_transparency_and_grey_alpha_are_flattened_too():
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0])
    palette.putpixel((0, 0), 1)
    image = decode_image(to_bytes(palette, "PNG", transparency=0), LIMITS)
    assert _close(image[0, 0], RED, 0) and _close(image[3, 3], WHITE, 0)
    grey = Image.new("LA", (2, 2), (0, 0))
    assert _close(decode_image(to_bytes(grey, "PNG"), LIMITS)[0, 0], WHITE, 0)


def test_sixteen_bit_grey_is_scaled_not_clipped():
    grey = Image.new("I;16", (2, 1))
    grey.putpixel((0, 0), 65535)
    grey.putpixel((1, 0), 32768)
    image = decode_image(to_bytes(grey, "PNG"), LIMITS)
    assert image[0, 0].tolist() == [255] * 3 and image[0, 1].tolist() == [128] * 3


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height and whose pixel data is a few junk bytes."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"junk")
            + chunk(b"IEND", b""))


def test_pixel_limit_is_checked_from_the_header_before_decoding():
    # The pixel data is junk: decoding would fail with corrupt_media, so media_too_large shows
    # that the size was refused first.
    data = _png_header_only(2000, 1000)
    assert len(data) < 100
    with pytest.raises(MediaError) as caught:
        decode_image(data, MediaLimits(max_image_pixels=1_000_000), item_id="bomb")
    assert caught.value.code == MEDIA_TOO_LARGE and "2000x1000" in str(caught.value)
    assert caught.value.item_id == "bomb"
    with pytest.raises(MediaError) as caught:
        decode_image(data, LIMITS)
    assert caught.value.code == CORRUPT_MEDIA  # within the limit, the junk is found


@pytest.mark.parametrize("side", [10_000, 20_000])  # over Pillow's warning, over its error
def test_decompression_bomb_is_refused(side):
    with pytest.raises(MediaError) as caught:
        decode_image(_png_header_only(side, side), LIMITS)
    assert caught.value.code == MEDIA_TOO_LARGE


def test_the_pixel_limit_stays_under_pillows():
    assert PILLOW_MAX_IMAGE_PIXELS == Image.MAX_IMAGE_PIXELS
    with pytest.raises(ValueError, match="Pillow"):
        MediaLimits(max_image_pixels=PILLOW_MAX_IMAGE_PIXELS + 1)


def test_byte_limit():
    data = to_bytes(_two_colour(), "PNG")
    with pytest.raises(MediaError) as caught:
        decode_image(data, MediaLimits(max_image_bytes=len(data) - 1))
    assert caught.value.code == MEDIA_TOO_LARGE


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_truncated_images_are_corrupt(fmt):
    data = to_bytes(Image.effect_noise((64, 64), 64).convert("RGB"), fmt)
    with pytest.raises(MediaError) as caught:
        decode_image(data[: len(data) // 2], LIMITS, item_id="half")
    assert caught.value.code == CORRUPT_MEDIA and caught.value.item_id == "half"


def test_garbage_other_formats_and_wrong_mime():
    with pytest.raises(MediaError) as caught:
        decode_image(b"definitely not an image", LIMITS)
    assert caught.value.code == CORRUPT_MEDIA
    with pytest.raises(MediaError) as caught:
        decode_image(to_bytes(_two_colour(), "BMP"), LIMITS)
    assert caught.value.code == CORRUPT_MEDIA and "PNG, JPEG, WebP or GIF" in str(caught.value)
    with pytest.raises(MediaError) as caught:
        decode_image(to_bytes(_two_colour(), "PNG"), LIMITS, mime="image/tiff")
    assert caught.value.code == UNSUPPORTED_MEDIA
