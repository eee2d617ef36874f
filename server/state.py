"""What an app holds for its requests (`State`), and `state()` to reach it from a route."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import current_app

from server.config import ServerConfig
from server.ensemble import Ensemble
from server.manifest import Manifest
from server.metrics import Metrics
from server.predictor import Predictor

log = logging.getLogger("server")


@dataclass
class State:
    config: ServerConfig
    manifest: Manifest
    ensemble: Ensemble
    predictor: Predictor
    metrics: Metrics
    self_test: dict
    v2_models: dict
    ready: bool = False

    def close(self) -> None:
        """Stops what the app started (its batch pool); /readyz answers 503 from now on. For
        the server that stops the app (`python -m server` calls it at shutdown)."""
        self.ready = False
        if self.predictor.helpers is not None:
            self.predictor.helpers.close()

    def finished(self, route: str, path: str, method: str, status: int, seconds: float) -> None:
        """Every answer: counted, timed and (if asked) logged."""
        self.metrics.request(route, method, status, seconds)
        if self.config.access_log:
            log.info("%s %s %d %.1f ms", method, path, status, 1000 * seconds)


def state() -> State:
    """The current app's State, for every blueprint."""
    return current_app.extensions["digits"]
