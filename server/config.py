"""The server's settings: one dataclass, filled from command-line flags by __main__."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

# Caps multipart text fields (we expect none), but werkzeug also applies it to its multipart
# buffer, which it fills 64 KiB at a time: a cap near that refuses valid uploads.
MAX_FORM_MEMORY = 1024 * 1024

# The environment the commands (`python -m server`, `python -m server.predict`) give
# themselves before they import onnxruntime, unless it is set already: onnxruntime's Linux
# wheels send usage telemetry and keep a device id under ~/.cache unless
# ORT_DISABLE_TELEMETRY=1 is in the environment when it is imported (onnxruntime's
# Privacy.md, "Disabling Telemetry").
COMMAND_ENVIRONMENT = {"ORT_DISABLE_TELEMETRY": "1"}
# prometheus_client's multiprocess mode: the directory of every process's metric files, read
# from the environment when prometheus_client is imported (its documentation).
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def command_environment() -> None:
    """For a command's main(), before anything imports onnxruntime: COMMAND_ENVIRONMENT's
    variables that the caller's environment does not set."""
    for name, value in COMMAND_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


def available_cores(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The cores this process may use: its CPU affinity, capped by a container's CPU limit.

    A container sees every core of its host in its affinity; its limit is a CFS quota, in
    cgroup v2's cpu.max or cgroup v1's cpu.cfs_quota_us. One worker per host core under a limit
    of 2 CPUs would start dozens of processes and be throttled (and killed for memory)."""
    cores = len(os.sched_getaffinity(0))
    for quota_file, period_file in (
        (cgroup / "cpu.max", None),  # "max 100000" or "200000 100000"
        (cgroup / "cpu/cpu.cfs_quota_us", cgroup / "cpu/cpu.cfs_period_us"),  # -1: no limit
    ):
        try:
            fields = quota_file.read_text().split()
            quota = fields[0]
            period = fields[1] if period_file is None else period_file.read_text().strip()
            if quota not in ("max", "-1"):
                cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
        except (OSError, ValueError, IndexError):
            continue
    return cores


@dataclass
class ServerConfig:
    artifacts: Path = Path("artifacts")
    host: str = "127.0.0.1"
    port: int = 8000
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 1  # onnxruntime threads per inference; requests run in parallel already
    # One process per core: Python threads contend for the GIL (8 threads in one process
    # served under a quarter as many 28x28 PNGs as 2 processes; README, Benchmarks). Within a
    # process, requests run on three lanes of threads by body size (server/asgi.py).
    workers: int = field(default_factory=available_cores)
    bulk_threads: int = 1
    bulk_from: int = 32 * 1024  # bytes of body from which a request takes the bulk lane
    # Per worker: processes that preprocess slices of large batches (server/batch_pool.py),
    # started by the app on its first large batch; 0 keeps every batch in its request thread.
    batch_helpers: int = 1
    max_body: int = 10 * 1024 * 1024  # bytes of one request body; exactly this many pass
    max_pixels: int = 40_000_000  # pixels of one image, checked before it is decoded
    max_batch: int = 256  # images in one request
    # Seconds from a connection's first byte (or the end of its last request) to the end of
    # the next request's headers, and from there to the end of its body: deadlines, not idle
    # timeouts, so a client that trickles bytes is dropped all the same.
    header_timeout: int = 10
    body_timeout: int = 30
    access_log: bool = False

    def __post_init__(self):
        self.artifacts = Path(self.artifacts)
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError("device must be auto, cpu or cuda")
        for name in (
            "threads",
            "workers",
            "bulk_threads",
            "bulk_from",
            "max_body",
            "max_pixels",
            "max_batch",
            "header_timeout",
            "body_timeout",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.batch_helpers < 0:
            raise ValueError("batch_helpers must be at least 0")
        # granian's limit for its header read timeout (60,000 ms).
        if self.header_timeout > 60:
            raise ValueError("header_timeout must be at most 60")
