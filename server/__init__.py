"""The digit server: `create_app(config)` (server/app.py) builds a Flask app for any WSGI
server; `python -m server` (server/__main__.py) serves it under granian.

Importing a module of this package imports nothing else: the batch helpers import only
preprocessing (numpy and Pillow), and the launcher decides the environment (onnxruntime's
telemetry, prometheus_client's multiprocess directory) before flask, onnxruntime or
prometheus_client are imported.
"""

from __future__ import annotations

# What `from server import X` finds in server/app.py, imported on first use (PEP 562).
_APP_NAMES = frozenset(("create_app", "SecurityHeaders", "SECURITY_HEADERS"))


def __getattr__(name: str):
    if name in _APP_NAMES:
        from server import app

        return getattr(app, name)
    raise AttributeError(f"module 'server' has no attribute {name!r}")
