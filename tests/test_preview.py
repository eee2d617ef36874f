"""The upload's preview beside its result: upright, on white paper, small, and in the
upload's own pixels (the digits' boxes are drawn on it in those)."""

import base64
import io

import numpy as np
from PIL import Image

from server import preview
from tests.uploads import png

MAX_PIXELS = 40_000_000


def _shown(p: preview.Preview) -> Image.Image:
    media, data = p.url.split(",", 1)
    assert media.startswith("data:image/") and media.endswith(";base64")
    return Image.open(io.BytesIO(base64.b64decode(data)))


def test_exif_turned_photo_is_previewed_upright_in_its_upright_size():
    ink = np.full((100, 200, 3), 255, np.uint8)
    ink[10:30, 10:60] = 0  # a mark at the stored image's top left
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: show the picture rotated 90 degrees clockwise
    buf = io.BytesIO()
    Image.fromarray(ink).save(buf, format="JPEG", exif=exif, quality=95)
    p = preview.make(buf.getvalue(), MAX_PIXELS)
    assert (p.width, p.height) == (100, 200)
    shown = np.asarray(_shown(p).convert("L"))
    assert shown.shape == (200, 100)
    # Turned clockwise, the stored top left is the upright top right.
    assert shown[10:60, 70:90].mean() < 60 and shown[10:60, 10:30].mean() > 200


def test_transparent_drawing_is_shown_on_white_paper():
    rgba = np.zeros((80, 80, 4), np.uint8)  # transparent black everywhere
    rgba[20:60, 35:45] = (0, 0, 0, 255)  # a stroke of opaque black ink
    p = preview.make(png(rgba), MAX_PIXELS)
    shown = np.asarray(_shown(p).convert("L"))
    assert p.url.startswith("data:image/png;")
    assert shown[5, 5] == 255 and shown[40, 40] == 0


def test_a_large_photo_becomes_a_small_jpeg():
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (1200, 1600, 3), np.uint8)
    p = preview.make(png(photo), MAX_PIXELS)
    assert (p.width, p.height) == (1600, 1200)
    assert p.url.startswith("data:image/jpeg;")
    assert max(_shown(p).size) == preview.SIDE


def test_sixteen_bit_grey_keeps_its_tones():
    grey = np.full((50, 50), 30000, np.uint16)
    grey[:, :25] = 65535
    shown = np.asarray(_shown(preview.make(png(grey), MAX_PIXELS)).convert("L"))
    assert shown[0, 0] == 255 and 110 <= shown[0, 40] <= 125  # 30000 / 65535 of white


def test_what_cannot_be_decoded_has_no_preview():
    assert preview.make(b"just notes", MAX_PIXELS) is None
    assert preview.make(png(np.zeros((10, 10), np.uint8)), 50) is None  # over the pixel cap
