"""Baseline (a): a hello-world Flask app under waitress, the framework's ceiling here.

    python -m bench.hello_app --port 8001 [--threads 8]

Answers POST /predict with a fixed small JSON after reading the body, so the request and
response sizes match the real server's.
"""

from __future__ import annotations

import argparse

from flask import Flask, jsonify, request
from waitress import serve

ANSWER = {"label": 7, "confidence": 0.99, "votes": [0, 0, 0, 0, 0, 0, 0, 3, 0, 0]}


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/predict")
    def predict():
        request.get_data()
        return jsonify(ANSWER)

    @app.get("/readyz")
    def readyz():
        return jsonify({"ready": True})

    return app


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--threads", type=int, default=8)
    args = p.parse_args()
    serve(create_app(), host="127.0.0.1", port=args.port, threads=args.threads, ident="hello")


if __name__ == "__main__":
    main()
