"""The project's commands as users run them: `python -m server` in the background on
127.0.0.1 and a free port (LiveServer), and any `python -m` command run to its end (run)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench import procs

ROOT = Path(__file__).resolve().parent.parent


def run(module: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m module args` from the repository's root, run to its end: its exit status,
    stdout and stderr (text). One that outlives `timeout`, or a test interrupted meanwhile,
    is killed with every process it started (training's workers, the server's), not only
    the one this started."""
    with subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, so that all of it can be killed
    ) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


class LiveServer:
    def __init__(
        self,
        *args: str,
        python: str = sys.executable,
        env: dict | None = None,
        cwd: Path = ROOT,
        user: int | None = None,
    ):
        self.proc = subprocess.Popen(
            [python, "-m", "server", "--host", "127.0.0.1", "--port", "0", *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
            user=user,
        )
        self.lines: list[str] = []
        self.url = ""
        ready = threading.Event()

        def pump():
            for line in self.proc.stdout:
                self.lines.append(line)
                m = re.search(r"serving on (http://127\.0\.0\.1:\d+)", line)
                if m:
                    self.url = m.group(1)
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        ready.wait(60)
        if not self.url:
            self.stop()
            raise RuntimeError("server did not start:\n" + self.log)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def pids(self) -> list[int]:
        """The server's processes: the one started and the workers it forked."""
        return [self.proc.pid, *procs.children(self.proc.pid)]

    def descendants(self) -> list[int]:
        """Every process below the one started: workers, their batch helpers and fork servers."""
        return procs.tree(self.proc.pid)[1:]

    def rss_mb(self) -> dict[int, float]:
        """Resident memory of each of the server's processes, in MB."""
        return {pid: procs.rss_mb(pid) for pid in self.pids()}

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def wait_exit(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.proc.poll()
