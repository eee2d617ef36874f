"""A small picture of an upload for the page: shown beside the result, so that the result
visibly belongs to the image it was read from, and the ground the digits' boxes are drawn on.

Made on the server from the bytes the models read, with the preprocessing's own guarded
decoder (pixel, memory and structure limits, first frame, EXIF orientation): a TIFF that the
browser cannot show, or the no-JavaScript form post, gets a preview like any other upload.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from server.errors import ApiError
from server.preprocess import LOSSY_FORMATS, decode

SIDE = 480  # longest side of the preview, in pixels: sharp at the page's size on a 2x screen
JPEG_QUALITY = 85


@dataclass(frozen=True)
class Preview:
    url: str  # a data: URL (the page's Content-Security-Policy allows data: images)
    width: int  # the upload's upright width and height, in the pixels its boxes are given in
    height: int


def _on_white(im: Image.Image) -> Image.Image:
    """Transparent pixels shown as white paper, as preprocessing reads them as background."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(paper, rgba).convert("RGB")
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # 16-bit and float greys: Pillow's convert("L") clips them; scaled to 8 bits instead,
        # with the range preprocessing's to_grey assumes.
        arr = np.asarray(im, dtype=np.float32)
        top = 65535.0 if im.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        return Image.fromarray((np.clip(arr / top, 0, 1) * 255).astype(np.uint8), "L")
    return im.convert("RGB") if im.mode not in ("RGB", "L") else im


def make(data: bytes, max_pixels: int) -> Preview | None:
    """The upload as a JPEG (photos) or PNG (drawings, scans) data URL at most SIDE pixels on
    a side; None when it cannot be decoded (the result then says why already)."""
    try:
        upload = decode(data, max_pixels)
    except ApiError:
        return None
    im = upload.image
    w, h = upload.size
    # decode() returns the image upright and, for a large JPEG, reduced: the upload's upright
    # size is its stored size, turned when EXIF turned the picture on its side.
    if (im.width > im.height) != (w > h) and im.width != im.height and w != h:
        w, h = h, w
    im = _on_white(im)
    im.thumbnail((SIDE, SIDE), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    # A photo (a lossy upload, or colours beyond a palette's): a JPEG a fraction of a PNG's size.
    if upload.format in LOSSY_FORMATS or im.getcolors(256) is None:
        im.save(buf, format="JPEG", quality=JPEG_QUALITY)
        media = "image/jpeg"
    else:  # a drawing, a scan, a screenshot: sharp edges stay sharp
        im.save(buf, format="PNG", optimize=True)
        media = "image/png"
    return Preview(f"data:{media};base64,{base64.b64encode(buf.getvalue()).decode()}", w, h)
