"""Issue #20's baseline: TorchServe 0.12 tuned, serving the same models as our server.

    python -m bench.torchserve     # ours and TorchServe, interleaved: bench/results/torchserve.md

TorchServe and its torch live in a virtualenv of their own, outside the repository and never in
requirements-serve.txt. Java 17 must be on PATH (or JAVA_HOME). Made once with:

    python3 -m venv ~/.cache/digits-venvs/torchserve
    ~/.cache/digits-venvs/torchserve/bin/pip install torch==2.14.1 torchserve==0.12.0 \\
        torch-model-archiver==0.12.0 PyYAML

(or elsewhere, named by $TORCHSERVE_VENV). Where it exists, `python -m bench` also loads
TorchServe on the 28x28 PNG at c=8 and adds issue #20's target to its table.

Modules: ensemble.py (the bundle's models and vote as one TorchScript file, made with the
repository's torch), digit_codec.py (request bytes -> tensor, outputs -> JSON; plain functions),
handler.py (the TorchServe handler, which runs in TorchServe's worker), server.py (archive,
config.properties, start and stop), __main__.py (the interleaved comparison).
"""
