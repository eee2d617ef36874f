"""What each worker process of `python -m server` serves: granian's target `server.worker:app`,
a factory it calls in every worker it starts (server/__main__.py).

The master sets `config`, `failed_fd` and `master_pid` before granian forks the workers, which
inherit them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import signal
import sys

from server.app import create_app
from server.asgi import SWITCH_INTERVAL, BufferedWSGI
from server.config import ServerConfig
from server.ensemble import DeviceError, SelfTestError
from server.manifest import ManifestError

log = logging.getLogger("server")

config: ServerConfig | None = None
port: int = 0  # the port granian was given (config.port may be 0)
# A pipe's write end: a worker that cannot start writes to it, so that the master can exit
# with status 2 (a broken bundle or device) rather than granian's 1 (a worker crashed).
failed_fd: int | None = None
master_pid: int | None = None  # the process that forks the workers

PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent exits


def _die_with_master() -> None:
    """A worker whose master is killed (SIGKILL, the OOM killer) stops too, gracefully: the
    kernel sends it SIGTERM (prctl(2), Linux). granian forks workers from its main thread,
    whose end is the master's."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        # The master was gone before the call. Not `getppid() == 1`: in a container the
        # master is PID 1.
        if master_pid is not None and os.getppid() != master_pid:
            os._exit(1)


async def _announce(timeout: float = 120) -> None:
    """Logs "serving on" once the port accepts connections. granian's master binds the port,
    but the workers listen on it, after loading the app: until one does, a client is refused.
    (A thread in the master would be forked along with the workers, and break them.)"""
    lanes = f"a thread for bodiless requests, one for small ones, {config.bulk_threads} bulk"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection(config.host, port)
            writer.close()
            log.info(
                "serving on http://%s:%s (%d worker(s); worker %d: %s thread(s))",
                config.host,
                port,
                config.workers,
                os.getpid(),
                lanes,
            )
            return
        await asyncio.sleep(0.005)


def app() -> BufferedWSGI:
    """The ASGI app of one worker: create_app(config) behind server/asgi.py's bridge."""
    _die_with_master()
    try:
        flask_app = create_app(config)
    except (ManifestError, DeviceError, SelfTestError) as e:
        log.error("cannot start: %s", e)
        if failed_fd is not None:
            os.write(failed_fd, b"2")
        os.kill(os.getppid(), signal.SIGTERM)  # no point in starting the others or again
        os._exit(2)
    state = flask_app.extensions["digits"]
    # Everything loaded so far lives as long as the process: keep it out of the cyclic
    # garbage collector's way, so collections stay short under load.
    gc.collect()
    gc.freeze()
    sys.setswitchinterval(SWITCH_INTERVAL)
    return BufferedWSGI(
        flask_app,
        max_body=config.max_body,
        body_timeout=config.body_timeout,
        bulk_from=config.bulk_from,
        bulk_threads=config.bulk_threads,
        queued=lambda lane: state.metrics.queued.labels(lane=lane),
        on_startup=_announce,
        on_shutdown=state.close,
    )
