"""The facts of a bundle that export writes once into manifest.json, and the server reads from
there (server/manifest.py) instead of spelling them again."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BundleSpec:
    input_name: str = "image"  # the graphs' input: float32 [N, 1, height, width], normalised
    height: int = 28  # MNIST's digits
    width: int = 28
    classes: tuple[str, ...] = tuple(str(d) for d in range(10))
    # The largest |probability difference| accepted between onnxruntime and PyTorch at export
    # (export/verify.py), and between the server's run and golden.npz at start-up.
    parity_atol: float = 1e-4

    @property
    def input_shape(self) -> list:
        return [None, 1, self.height, self.width]


SPEC = BundleSpec()
