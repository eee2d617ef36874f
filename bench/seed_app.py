"""Baseline (b): what the seed would deploy. Flask under waitress, the same three LeNet-5
models in PyTorch eager mode, and preprocessing that only resizes and normalises.

    python -m bench.seed_app --port 8002 --run runs/latest [--threads 8]

Loads the three best.pt checkpoints of a training run (the same weights export turned into
the shipped ONNX files), so model cost is identical; only the serving stack differs.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
import torch
from flask import Flask, jsonify, request
from PIL import Image
from waitress import serve

from training import checkpoint
from training.vote import vote


def create_app(run: Path) -> Flask:
    names = json.loads((run / "run.json").read_text())["variants"]
    loaded = [checkpoint.load(run / name / "best.pt") for name in names]
    models = [m for m, _ in loaded]
    norm = loaded[0][1]["normalisation"]
    app = Flask(__name__)

    @app.post("/predict")
    def predict():
        data = request.files["image"].read() if request.files else request.get_data()
        image = Image.open(io.BytesIO(data)).convert("L").resize((28, 28))
        x = (np.asarray(image, dtype=np.float32) / 255.0 - norm["mean"]) / norm["std"]
        with torch.no_grad():
            t = torch.from_numpy(x)[None, None]
            probs = torch.stack([m(t).softmax(1) for m in models])
            label, votes, tie = vote(probs)
        return jsonify(
            {
                "label": int(label[0]),
                "votes": votes[0].tolist(),
                "tie_broken": bool(tie[0]),
                "models": [
                    {"label": int(p.argmax()), "probabilities": p[0].tolist()} for p in probs
                ],
            }
        )

    @app.get("/readyz")
    def readyz():
        return jsonify({"ready": True})

    return app


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--threads", type=int, default=8)
    args = p.parse_args()
    serve(
        create_app(args.run), host="127.0.0.1", port=args.port, threads=args.threads, ident="seed"
    )


if __name__ == "__main__":
    main()
