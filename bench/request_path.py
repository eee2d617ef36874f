"""python -m bench.request_path: what POST /predict's thin path in front of Flask saves.

    python -m bench.request_path [--rounds 5] [--requests 2000]

In one process, on the shipped bundle, the same 28x28 PNG request is served through the app
as built (server/api.py: PredictFastPath, then Flask for everything else) and through Flask's
own /predict route (the same app without the thin path), in interleaved rounds. Reports CPU
microseconds per request (process time, so that other load on the machine counts less than
in wall time), with the models and preprocessing real, and with them stubbed out (the HTTP
side alone). The WSGI environ is built once per round and copied per request.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

from werkzeug.test import EnvironBuilder

from server import SecurityHeaders, create_app
from server.config import ServerConfig

ROOT = Path(__file__).resolve().parent.parent


def per_request_us(wsgi, environ: dict, body: bytes, n: int) -> float:
    def start_response(status, headers, exc_info=None):
        return None

    t0 = time.process_time()
    for _ in range(n):
        env = dict(environ)
        env["wsgi.input"] = io.BytesIO(body)
        b"".join(wsgi(env, start_response))
    return 1e6 * (time.process_time() - t0) / n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--requests", type=int, default=2000)
    args = p.parse_args(argv)

    body = (ROOT / "examples" / "mnist-7.png").read_bytes()
    app = create_app(ServerConfig(artifacts=ROOT / "artifacts", batch_helpers=0))
    flask_only = SecurityHeaders(app.wsgi_app.app.wsgi)  # the Flask app behind the thin path
    paths = {"thin path": app.wsgi_app, "Flask route": flask_only}
    environ = EnvironBuilder(
        path="/predict", method="POST", data=body, content_type="image/png"
    ).get_environ()
    predictor = app.extensions["digits"].predictor
    real = predictor.predict
    cached = real([body])
    results: dict[tuple[str, str], list[float]] = {}
    for models in ("real", "stubbed"):
        predictor.predict = (
            real if models == "real" else (lambda images, include_image=False: cached)
        )
        for wsgi in paths.values():
            per_request_us(wsgi, environ, body, 200)  # warm-up
        for _ in range(args.rounds):
            for name, wsgi in paths.items():
                us = per_request_us(wsgi, environ, body, args.requests)
                results.setdefault((models, name), []).append(us)
    predictor.predict = real
    print(f"CPU us per POST /predict of a 28x28 PNG, {args.rounds} interleaved rounds")
    for (models, name), values in results.items():
        print(
            f"models {models:<8} {name:<12} median {statistics.median(values):7.1f}"
            f"  ({min(values):.1f}-{max(values):.1f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
