"""Images as clients send them, for the tests that talk to a server."""

from __future__ import annotations

import io

import numpy as np
import requests
from PIL import Image


def png(img: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", **kw)
    return buf.getvalue()


def predict_labels(url: str, images: np.ndarray) -> list[int]:
    """The digits POST /predict answers for `images` (uint8 [N, 28, 28]), as one batch."""
    files = [("image", (f"{i}.png", png(img), "image/png")) for i, img in enumerate(images)]
    r = requests.post(url + "/predict", files=files, timeout=120)
    r.raise_for_status()
    return [result["label"] for result in r.json()["results"]]
