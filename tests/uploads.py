"""Images as clients send them, for the tests that talk to a server."""

from __future__ import annotations

import io
import json

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


def binary_v2_request(x: np.ndarray, name: str = "image") -> tuple[bytes, dict]:
    """A v2 infer body that carries `x` as binary data after its JSON header, and its headers."""
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "datatype": "FP32",
                    "shape": list(x.shape),
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ]
        }
    ).encode()
    return head + x.tobytes(), {"Inference-Header-Content-Length": str(len(head))}
