"""The server's settings: one dataclass, filled from command-line flags by __main__."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

# Caps multipart text fields (we expect none), but werkzeug also applies it to its multipart
# buffer, which it fills 64 KiB at a time: a cap near that refuses valid uploads.
MAX_FORM_MEMORY = 1024 * 1024


@dataclass
class ServerConfig:
    artifacts: Path = Path("artifacts")
    host: str = "127.0.0.1"
    port: int = 8000
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 1  # onnxruntime threads per inference; requests run in parallel already
    # One process per core: Python threads contend for the GIL (8 threads in one process
    # served under a quarter as many 28x28 PNGs as 2 processes; README, Benchmarks). Within a
    # process, one thread per lane: small requests do not queue behind large ones, and no
    # more threads take turns at the GIL than the traffic needs (server/lanes.py).
    workers: int = field(default_factory=lambda: len(os.sched_getaffinity(0)))
    http_threads: int = 1
    bulk_from: int = 32 * 1024  # bytes of body from which a request takes the bulk lane
    # Per worker: processes that preprocess slices of large batches (server/helpers.py); 0
    # keeps every batch in its request thread. Started by `python -m server`, not create_app.
    batch_helpers: int = 1
    max_body: int = 10 * 1024 * 1024  # bytes of one request body
    max_pixels: int = 40_000_000  # pixels of one image, checked before it is decoded
    max_batch: int = 256  # images in one request
    channel_timeout: int = 30  # seconds a client may stay silent mid-request
    connection_limit: int = 200  # open connections waitress accepts
    access_log: bool = False

    def __post_init__(self):
        self.artifacts = Path(self.artifacts)
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError("device must be auto, cpu or cuda")
        for name in (
            "threads",
            "workers",
            "http_threads",
            "bulk_from",
            "max_body",
            "max_pixels",
            "max_batch",
            "channel_timeout",
            "connection_limit",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.batch_helpers < 0:
            raise ValueError("batch_helpers must be at least 0")
