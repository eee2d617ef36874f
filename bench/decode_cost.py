"""Peak memory of preprocessing one 4000x4000 image per mode and format, each in a fresh
process: the figures behind server/decode_budget.py's bytes per pixel.

    python -m bench.decode_cost
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 4000
KINDS = [
    ("1", "PNG"),
    ("L", "PNG"),
    ("P", "PNG"),
    ("PA", "PNG"),
    ("RGB", "PNG"),
    ("RGBA", "PNG"),
    ("LA", "PNG"),
    ("I;16", "PNG"),
    ("I;16", "TIFF"),
    ("F", "TIFF"),
    ("CMYK", "TIFF"),
    ("RGB", "WEBP"),
    ("RGBA", "WEBP"),
    ("RGB", "JPEG"),
]


def image(mode: str, fmt: str) -> bytes:
    """A dark bar on white paper, in `mode`."""
    im = Image.new("L", (SIZE, SIZE), 255)
    im.paste(0, (SIZE // 3, SIZE // 3, SIZE // 3 + SIZE // 10, 2 * SIZE // 3))
    kw = {}
    if mode == "I;16":
        im = Image.fromarray(np.asarray(im).astype(np.uint16) * 257)
    elif mode == "F":
        im = Image.fromarray(np.asarray(im).astype(np.float32))
    elif mode == "PA":
        im, kw = im.convert("P"), {"transparency": 3}
    else:
        im = im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def measure(path: str) -> float:
    """MB of peak RSS that preprocessing the file at `path` adds (run in a fresh process)."""
    from server import decode_budget
    from server.manifest import InputSpec
    from server.preprocess import preprocess

    decode_budget.MAX_DECODE_BYTES = 2**62  # what the limit would refuse is what we measure
    data = Path(path).read_bytes()
    before = _peak_kb()
    preprocess(data, InputSpec("image", 28, 28, 0.1307, 0.3081, True, 20, (14.0, 14.0)), 10**9)
    return (_peak_kb() - before) / 1024


def _peak_kb() -> int:
    # VmHWM, not getrusage's ru_maxrss: a process started by another keeps that one's peak
    # in ru_maxrss across exec, which would hide ours behind the parent's.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def main() -> None:
    import tempfile

    print(f"{'mode':6} {'format':6} {'peak MB':>8} {'bytes/pixel':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        for mode, fmt in KINDS:
            path = f"{tmp}/{mode.replace(';', '')}.{fmt.lower()}"
            with open(path, "wb") as f:
                f.write(image(mode, fmt))
            code = f"from bench.decode_cost import measure; print(measure({path!r}))"
            out = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            )
            mb = float(out.stdout.split()[-1])
            print(f"{mode:6} {fmt:6} {mb:8.0f} {mb * 2**20 / SIZE**2:12.1f}")


if __name__ == "__main__":
    main()
