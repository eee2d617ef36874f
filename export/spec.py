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
    # How MNIST itself was made (LeCun et al.), measured again on the training set: the longer
    # side of every digit's ink box is 20 pixels (99.98 %), and the centre of mass sits at
    # pixel (14.0, 14.0), row and column, 0-based (mean over 20k digits, sd 0.29).
    digit_box: int = 20
    centre_of_mass: tuple[float, float] = (14.0, 14.0)
    # The largest |probability difference| accepted between onnxruntime and PyTorch at export
    # (export/verify.py), and between the server's run and golden.npz at start-up.
    parity_atol: float = 1e-4

    @property
    def input_shape(self) -> list:
        return [None, 1, self.height, self.width]


SPEC = BundleSpec()
