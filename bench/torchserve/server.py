"""TorchServe 0.12 serving the shipped ensemble, started and stopped like bench's own servers.

`TorchServe(artifacts, venv)` builds the model archive in a temporary folder, writes its
config.properties, starts `torchserve --foreground` from the TorchServe virtualenv in a process
group of its own and returns once every worker is READY; `stop()` ends the whole group (the
launcher, Java and the Python workers) and checks that nothing of it is left. It has what
bench's `wrk()` reads of a server: `name`, `url`, `predict_url` and `proc`, the launcher,
whose process tree holds Java and the workers (for the CPU time per request).

Everything listens on 127.0.0.1, on ports free when it starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from bench import procs
from bench.torchserve.ensemble import save_ensemble

HERE = Path(__file__).resolve().parent
VENV_VARIABLE = "TORCHSERVE_VENV"
DEFAULT_VENV = Path.home() / ".cache" / "digits-venvs" / "torchserve"
MODEL = "digits"
SETUP = (
    "python3 -m venv ~/.cache/digits-venvs/torchserve && "
    "~/.cache/digits-venvs/torchserve/bin/pip install torch==2.14.1 torchserve==0.12.0 "
    "torch-model-archiver==0.12.0 PyYAML"
)


@dataclass(frozen=True)
class Tuning:
    """Issue #20's "TorchServe 0.12 tuned": 2 workers x 1 thread, batches of up to 8 requests
    that wait at most 5 ms for each other."""

    workers: int = 2
    threads_per_worker: int = 1
    batch_size: int = 8
    max_batch_delay_ms: int = 5


def venv_path(explicit: Path | None = None) -> Path:
    """The TorchServe virtualenv: --venv, else $TORCHSERVE_VENV, else the cache default."""
    return explicit or Path(os.environ.get(VENV_VARIABLE) or DEFAULT_VENV)


def installed(venv: Path) -> bool:
    return all((venv / "bin" / tool).is_file() for tool in ("torchserve", "torch-model-archiver"))


def build_archive(artifacts: Path, venv: Path, folder: Path) -> Path:
    """The model archive folder/model-store/digits.mar: the TorchScript ensemble (made here, by
    this venv's torch), the handler, its codec and the bundle's manifest (mean and std)."""
    store = folder / "model-store"
    store.mkdir()
    model = save_ensemble(artifacts, folder / "ensemble.pt")
    extra = [HERE / "digit_codec.py", artifacts / "manifest.json"]
    subprocess.run(
        [
            str(venv / "bin" / "torch-model-archiver"),
            "--model-name",
            MODEL,
            "--version",
            "1.0",
            "--serialized-file",
            str(model),
            "--handler",
            str(HERE / "handler.py"),
            "--extra-files",
            ",".join(str(p) for p in extra),
            "--export-path",
            str(store),
        ],
        check=True,
        capture_output=True,
    )
    return store / f"{MODEL}.mar"


def config_properties(ports: dict[str, int], store: Path, tuning: Tuning) -> str:
    model = {
        "1.0": {
            "defaultVersion": True,
            "marName": f"{MODEL}.mar",
            "minWorkers": tuning.workers,
            "maxWorkers": tuning.workers,
            "batchSize": tuning.batch_size,
            "maxBatchDelay": tuning.max_batch_delay_ms,
            "responseTimeout": 120,
        }
    }
    lines = [
        f"inference_address=http://127.0.0.1:{ports['inference']}",
        f"management_address=http://127.0.0.1:{ports['management']}",
        f"metrics_address=http://127.0.0.1:{ports['metrics']}",
        # gRPC is on by default, on 7070/7071 of every interface: moved to 127.0.0.1 too.
        "grpc_inference_address=127.0.0.1",
        f"grpc_inference_port={ports['grpc_inference']}",
        "grpc_management_address=127.0.0.1",
        f"grpc_management_port={ports['grpc_management']}",
        f"model_store={store}",
        f"load_models={MODEL}.mar",
        f"models={json.dumps({MODEL: model})}",
        f"default_workers_per_model={tuning.workers}",
        "disable_token_authorization=true",
        # More than the 32 connections of bench's highest concurrency (and TorchServe's
        # default): no request is turned away with a 503 for a full queue.
        "job_queue_size=100",
        # Documented knobs for throughput: logs written by a background thread, and no system
        # metrics (a Python process started every minute, which would land in some runs).
        "async_logging=true",
        "disable_system_metrics=true",
        # number_of_netty_threads and netty_client_threads keep their default, one per core.
    ]
    return "\n".join(lines) + "\n"


def free_ports(names: tuple[str, ...]) -> dict[str, int]:
    """A free port on 127.0.0.1 for each name, all held at once so that no two are the same."""
    sockets = [socket.socket() for _ in names]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return {name: s.getsockname()[1] for name, s in zip(names, sockets, strict=True)}
    finally:
        for s in sockets:
            s.close()


def group_alive(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group `pgid`."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) == pgid and procs.alive(int(entry.name)):
                alive.append(int(entry.name))
        except ProcessLookupError:
            pass
    return alive


class TorchServe:
    def __init__(
        self,
        artifacts: Path,
        venv: Path,
        tuning: Tuning = Tuning(),
        name: str = "torchserve",
        timeout: float = 180,
    ):
        self.name = name
        self.tuning = tuning
        self.folder = Path(tempfile.mkdtemp(prefix="torchserve-"))
        self.proc: subprocess.Popen | None = None
        try:
            store = build_archive(artifacts, venv, self.folder).parent
            ports = free_ports(
                ("inference", "management", "metrics", "grpc_inference", "grpc_management")
            )
            self.port = ports["inference"]
            self.url = f"http://127.0.0.1:{self.port}"
            self.predict_url = f"{self.url}/predictions/{MODEL}"
            self.management_url = f"http://127.0.0.1:{ports['management']}"
            config = self.folder / "config.properties"
            config.write_text(config_properties(ports, store, tuning))
            env = {
                **os.environ,
                # Read by torch in the workers before the handler's set_num_threads runs.
                "OMP_NUM_THREADS": str(tuning.threads_per_worker),
                # The launcher's pid file (TMPDIR) and the workers' Unix sockets (TEMP, Java's
                # tmpdir) go to this run's folder, not /tmp, where another TorchServe (a
                # colleague's bench, run beside this one) would see them as its own.
                "TMPDIR": str(self.folder),
                "TEMP": str(self.folder),
            }
            self.log = self.folder / "torchserve.out"
            with self.log.open("wb") as out:
                self.proc = subprocess.Popen(
                    [
                        str(venv / "bin" / "torchserve"),
                        "--start",
                        "--foreground",  # the launcher waits on Java: one tree to measure
                        "--ts-config",
                        str(config),
                        "--model-store",
                        str(store),
                        "--ncs",  # no config snapshots
                        "--disable-token-auth",
                    ],
                    cwd=self.folder,  # its logs/ folder
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a process group to end as one, also on Ctrl-C
                )
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _workers(self) -> list[dict]:
        r = requests.get(f"{self.management_url}/models/{MODEL}", timeout=2)
        return r.json()[0]["workers"] if r.status_code == 200 else []

    def _wait_ready(self, timeout: float) -> None:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"torchserve exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                workers = self._workers()
                if sum(w["status"] == "READY" for w in workers) == self.tuning.workers:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"torchserve: workers not ready after {timeout} s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Ends the launcher, Java and the workers; raises if any of them outlives SIGKILL."""
        if self.proc is not None:
            pgid = self.proc.pid
            # Java first: its shutdown ends the workers, and the launcher, waiting on Java,
            # then reaps it and exits. Signalling the group at once would kill the launcher
            # before that and leave Java a zombie until init gets to it.
            for pid in procs.children(pgid):
                os.kill(pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)
            # Whatever is left of the group (a stuck Java, a worker), with growing force.
            for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
                if not group_alive(pgid):
                    break
                try:
                    os.killpg(pgid, sig)
                except ProcessLookupError:
                    break
                deadline = time.monotonic() + wait
                while group_alive(pgid) and time.monotonic() < deadline:
                    self.proc.poll()  # reaps the launcher; init reaps Java and the workers
                    time.sleep(0.1)
            self.proc.wait(10)
            left = group_alive(pgid)
            if left:
                raise RuntimeError(f"torchserve: processes {left} outlived SIGKILL")
            self.proc = None
        shutil.rmtree(self.folder, ignore_errors=True)
