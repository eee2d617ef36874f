"""The models on onnxruntime: one session of the ensemble graph (three LeNet-5s and their vote),
shared by every request thread, on CPU or CUDA, with a golden self-test at start."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from server.manifest import Manifest
from server.preprocess import normalise

log = logging.getLogger(__name__)
CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
# What golden.npz holds besides the pixels: the ensemble's outputs, in the order it returns them.
GOLDEN_OUTPUTS = ("label", "votes", "tie_broken", "probabilities")
# The most images one CPU inference runs. onnxruntime's memory arena keeps the buffers of the
# largest batch it has seen: a process holding only this session grew from 65 to 122 MB on
# 256-image runs, to 71 MB on runs of 32, and per image 32 is as fast (256 images: 12.0 ms in
# one run, 11.3 ms in runs of 32, measured in one process).
CPU_RUN_IMAGES = 32


class DeviceError(Exception):
    """The asked-for device cannot be used. One line for the operator."""


class SelfTestError(Exception):
    """The models do not reproduce the golden outputs shipped with them."""


@dataclass(frozen=True)
class Outputs:
    label: np.ndarray  # int64 [N]
    votes: np.ndarray  # int64 [N, 10]
    tie_broken: np.ndarray  # bool [N]
    probabilities: np.ndarray  # float32 [N, models, 10]
    # The whole-digit check's probability that each image is one whole digit, float32 [N]:
    # asked for by the number mode, when the bundle has the check.
    whole: np.ndarray | None = None


def check_device(device: str) -> list[str]:
    """onnxruntime's providers; DeviceError where `device` asks for one it lacks."""
    available = ort.get_available_providers()
    if device == "cuda" and CUDA not in available:
        raise DeviceError(
            "--device cuda: this onnxruntime has no CUDA provider (install onnxruntime-gpu "
            f"instead of onnxruntime); available: {', '.join(available)}"
        )
    return available


def _providers(device: str) -> list:
    if device == "cpu":
        return [CPU]
    available = check_device(device)
    if CUDA in available:
        # onnxruntime-gpu installed with its [cuda,cudnn] extras keeps CUDA and cuDNN in pip
        # packages the loader does not search; preloading them is its documented remedy.
        if hasattr(ort, "preload_dlls"):
            ort.preload_dlls()
        # No TF32: answers must match the CPU's (and golden.npz), and these convolutions are
        # too small to gain from it. Heuristic algorithm choice: an exhaustive search would
        # stall the first request of every new batch size.
        options = {"device_id": 0, "use_tf32": 0, "cudnn_conv_algo_search": "HEURISTIC"}
        return [(CUDA, options), CPU]
    return [CPU]


class Ensemble:
    def __init__(self, manifest: Manifest, device: str = "auto", threads: int = 1):
        self._options = ort.SessionOptions()
        # Requests are already parallel (one per worker process): a pool per inference on top
        # would oversubscribe the cores. Spinning pool threads would burn CPU while idle.
        self._options.intra_op_num_threads = threads
        self._options.inter_op_num_threads = 1
        self._options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._options.log_severity_level = 3
        self._providers = _providers(device)
        self.session = self.open(manifest.ensemble_file)
        self.providers = self.session.get_providers()
        # onnxruntime falls back to the CPU quietly when CUDA libraries fail to load.
        if device == "cuda" and self.providers[0] != CUDA:
            raise DeviceError(
                f"--device cuda: the CUDA provider failed to start (active: {self.providers}); "
                "check the CUDA and cuDNN libraries onnxruntime-gpu needs"
            )
        self.device = "cuda" if self.providers[0] == CUDA else "cpu"
        # A GPU wants whole batches, and its memory is not the worker's RSS.
        self.run_images = CPU_RUN_IMAGES if self.device == "cpu" else None
        self.input_name = manifest.input.name
        self.output_names = manifest.output_order
        check = manifest.whole_digit
        self.check = self.open(check.file) if check is not None else None

    def open(self, path) -> ort.InferenceSession:
        """A session on the same device and with the same settings as the ensemble's."""
        try:
            return ort.InferenceSession(str(path), self._options, providers=self._providers)
        except Exception as e:  # onnxruntime raises its own hierarchy for broken graphs
            raise DeviceError(f"cannot load {path.name}: {e}") from None

    def run(self, batch: np.ndarray, whole: bool = False) -> Outputs:
        """batch: float32 [N, 1, H, W], normalised. `whole`: the whole-digit check's scores
        too, when the bundle has it."""
        label, votes, tie_broken, probabilities = self._runs(self.session, self.output_names, batch)
        scores = None
        if whole and self.check is not None:
            (scores,) = self._runs(self.check, None, batch)
        return Outputs(label, votes, tie_broken.astype(bool), probabilities, scores)

    def _runs(
        self, session: ort.InferenceSession, names: list[str] | None, batch: np.ndarray
    ) -> list[np.ndarray]:
        step = self.run_images or max(1, len(batch))
        parts = [
            session.run(names, {self.input_name: batch[i : i + step]})
            for i in range(0, len(batch), step)
        ]
        if len(parts) == 1:
            return parts[0]
        return [np.concatenate(p) for p in zip(*parts, strict=True)]

    def self_test(self, manifest: Manifest) -> dict:
        """Runs the golden digits shipped with the models and compares every output.

        golden.npz holds raw uint8 pixels (ink high, as MNIST stores them), and they are
        normalised here with the manifest's own mean, std and ink polarity, so an edit of those
        in manifest.json fails this test instead of serving skewed inputs."""
        try:
            with np.load(manifest.golden_file) as g:
                golden = {k: g[k] for k in ("pixels", *GOLDEN_OUTPUTS)}
        except (OSError, ValueError, KeyError) as e:
            raise SelfTestError(
                f"self-test: {manifest.golden_file.name} is unusable ({e})"
            ) from None
        pixels = golden["pixels"]
        if (
            pixels.dtype != np.uint8
            or len(pixels) == 0
            or pixels.shape[1:] != (manifest.input.height, manifest.input.width)
        ):
            raise SelfTestError(
                f"self-test: {manifest.golden_file.name} pixels are {pixels.dtype} "
                f"{list(pixels.shape)}, not uint8 [N, {manifest.input.height}, "
                f"{manifest.input.width}]"
            )
        out = self.run(np.stack([normalise(p, manifest.input) for p in pixels]))
        if out.probabilities.shape != golden["probabilities"].shape:
            raise SelfTestError(
                f"self-test: the models answer {list(out.probabilities.shape)} probabilities, "
                f"{manifest.golden_file.name} expects {list(golden['probabilities'].shape)}"
            )
        diff = float(np.abs(out.probabilities - golden["probabilities"]).max())
        if diff > manifest.golden_atol:
            raise SelfTestError(
                f"self-test: probabilities differ from {manifest.golden_file.name} by {diff:.2e} "
                f"(> {manifest.golden_atol:g}); the models or the manifest's input "
                "(mean, std, ink) are not what export wrote"
            )
        for name in GOLDEN_OUTPUTS[:3]:
            if not np.array_equal(getattr(out, name), golden[name]):
                raise SelfTestError(f"self-test: {name} differs from {manifest.golden_file.name}")
        return {"images": len(out.label), "max_abs_diff": diff}
