"""python -m export.triton: a Triton Inference Server model repository from the shipped bundle.

    python -m export.triton [--artifacts artifacts] [--out model_repository]
                            [--kind auto|cpu|gpu] [--instances 1] [--max-batch 256]

Writes, each with config.pbtxt and version 1/model.onnx:
  <model>/            each LeNet-5 (onnxruntime_onnx): image -> probabilities, logits
  ensemble/           the ensemble graph, three models and the vote in one ONNX file
  vote/               the bundle's vote.onnx (onnxruntime_onnx): three probability tensors ->
                      label, votes, tie_broken
  lenet5-vote/        a Triton ensemble (platform "ensemble") wiring the three models into
                      vote, so Triton schedules and batches each model separately
Names, shapes and types in every config are read from the ONNX files themselves.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import onnx

V2_TYPES = {
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.BOOL: "TYPE_BOOL",
}
KINDS = {"auto": "KIND_AUTO", "cpu": "KIND_CPU", "gpu": "KIND_GPU"}


def _tensors(values) -> list[tuple[str, str, list[int]]]:
    """(name, Triton type, dims without the batch axis) of ONNX graph inputs or outputs."""
    out = []
    for v in values:
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        out.append((v.name, V2_TYPES[t.elem_type], dims[1:]))
    return out


def _io_block(kind: str, tensors, reshape: bool = True) -> str:
    """Triton needs a dimension besides the batch: a per-item scalar is declared [1] (the
    client sees [N, 1]) and, for a model backend, reshaped to the graph's [] (the graph's [N]).
    An ensemble's own tensors keep [1]: they must match the configs of its steps."""
    entries = []
    for name, dtype, dims in tensors:
        extra = "\n    reshape: { shape: [ ] }" if not dims and reshape else ""
        entries.append(
            f'  {{\n    name: "{name}"\n    data_type: {dtype}\n'
            f"    dims: [ {', '.join(map(str, dims or [1]))} ]{extra}\n  }}"
        )
    return f"{kind} [\n" + ",\n".join(entries) + "\n]\n"


def onnx_config(
    name: str, model: onnx.ModelProto, max_batch: int, kind: str, instances: int
) -> str:
    g = model.graph
    return (
        f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: {max_batch}\n'
        + _io_block("input", _tensors(g.input))
        + _io_block("output", _tensors(g.output))
        + "dynamic_batching {\n  preferred_batch_size: [ 16, 64 ]\n"
        "  max_queue_delay_microseconds: 500\n}\n"
        f"instance_group [\n  {{\n    count: {instances}\n    kind: {KINDS[kind]}\n  }}\n]\n"
    )


def pipeline_config(
    members: list[str], member_model: onnx.ModelProto, vote_model: onnx.ModelProto, max_batch: int
) -> str:
    image = _tensors(member_model.graph.input)
    probs = next(t for t in _tensors(member_model.graph.output) if t[0] == "probabilities")
    outs = _tensors(vote_model.graph.output)
    per_model = [(f"probabilities_{i}", probs[1], probs[2]) for i in range(len(members))]
    steps = []
    for i, m in enumerate(members):
        steps.append(
            f'    {{\n      model_name: "{m}"\n      model_version: -1\n'
            f'      input_map {{ key: "image" value: "image" }}\n'
            f'      output_map {{ key: "probabilities" value: "probabilities_{i}" }}\n    }}'
        )
    inputs = " ".join(
        f'input_map {{ key: "p{i}" value: "probabilities_{i}" }}' for i in range(len(members))
    )
    outputs = " ".join(f'output_map {{ key: "{n}" value: "{n}" }}' for n, _, _ in outs)
    steps.append(
        f'    {{\n      model_name: "vote"\n      model_version: -1\n'
        f"      {inputs}\n      {outputs}\n    }}"
    )
    return (
        f'name: "lenet5-vote"\nplatform: "ensemble"\nmax_batch_size: {max_batch}\n'
        + _io_block("input", image, reshape=False)
        + _io_block("output", outs + per_model, reshape=False)
        + "ensemble_scheduling {\n  step [\n"
        + ",\n".join(steps)
        + "\n  ]\n}\n"
    )


def build(
    artifacts: Path, out: Path, kind: str = "auto", instances: int = 1, max_batch: int = 256
) -> list[str]:
    manifest = json.loads((artifacts / "manifest.json").read_text())
    if out.exists():
        shutil.rmtree(out)
    written = []

    def add(name: str, source: Path) -> onnx.ModelProto:
        folder = out / name / "1"
        folder.mkdir(parents=True)
        shutil.copy(source, folder / "model.onnx")
        model = onnx.load(folder / "model.onnx")
        config = onnx_config(name, model, max_batch, kind, instances)
        (out / name / "config.pbtxt").write_text(config)
        written.append(name)
        return model

    members = [add(e["name"], artifacts / e["file"]) for e in manifest["models"]]
    add("ensemble", artifacts / manifest["ensemble"]["file"])
    vote_model = add("vote", artifacts / manifest["vote"]["file"])
    # An ensemble has no file, but Triton wants a version folder.
    (out / "lenet5-vote" / "1").mkdir(parents=True)
    (out / "lenet5-vote" / "config.pbtxt").write_text(
        pipeline_config([e["name"] for e in manifest["models"]], members[0], vote_model, max_batch)
    )
    written.append("lenet5-vote")
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m export.triton",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    p.add_argument("--out", type=Path, default=Path("model_repository"))
    p.add_argument(
        "--kind",
        choices=sorted(KINDS),
        default="auto",
        help="instance group kind (default: auto, GPU where Triton has one)",
    )
    p.add_argument("--instances", type=int, default=1, help="instances per model")
    p.add_argument("--max-batch", type=int, default=256)
    args = p.parse_args(argv)
    if not (args.artifacts / "manifest.json").is_file():
        print(
            f"error: {args.artifacts}/manifest.json not found: export a bundle first",
            file=sys.stderr,
        )
        return 2
    for name in build(args.artifacts, args.out, args.kind, args.instances, args.max_batch):
        print(f"{args.out / name / 'config.pbtxt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
