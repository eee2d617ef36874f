"""The ensemble session: runs in pieces, and the golden self-test that guards start-up."""

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from server import manifest
from server.ensemble import CPU_RUN_IMAGES, Ensemble, SelfTestError
from tests.live import run


def test_a_large_batch_runs_in_pieces_with_the_answers_of_one_run(bundle, mnist_test):
    digits, labels = mnist_test
    m = manifest.load(bundle)
    ensemble = Ensemble(m, device="cpu")
    assert ensemble.run_images == CPU_RUN_IMAGES
    n = 3 * CPU_RUN_IMAGES + 5  # pieces of every size, the last one short
    images = digits[:n].astype(np.float32) / 255.0
    batch = ((images - m.input.mean) / m.input.std)[:, None]
    sizes = []
    run = ensemble.session.run
    ensemble.session.run = lambda names, feed: (
        sizes.append(len(feed[m.input.name])) or run(names, feed)
    )
    pieces = ensemble.run(batch)
    assert sizes == [CPU_RUN_IMAGES] * 3 + [5]
    ensemble.run_images = None
    whole = ensemble.run(batch)
    assert pieces.label.shape == (n,) and pieces.probabilities.shape == (n, 3, 10)
    np.testing.assert_array_equal(pieces.label, whole.label)
    np.testing.assert_array_equal(pieces.votes, whole.votes)
    np.testing.assert_array_equal(pieces.tie_broken, whole.tie_broken)
    np.testing.assert_allclose(pieces.probabilities, whole.probabilities, atol=1e-6)
    assert (pieces.label == labels[:n]).mean() > 0.97


def _bundle_copy(bundle: Path, dest: Path) -> Path:
    shutil.copytree(bundle, dest, ignore=shutil.ignore_patterns("*.png", "*.md"))
    return dest


def _edit_manifest(root: Path, edit) -> None:
    raw = json.loads((root / "manifest.json").read_text())
    edit(raw)
    (root / "manifest.json").write_text(json.dumps(raw, indent=2))


def rewrite_golden(root: Path, edit) -> None:
    """golden.npz changed by `edit`, its sha256 in the manifest fixed up to match."""
    path = root / "golden.npz"
    with np.load(path) as g:
        golden = {k: g[k] for k in g.files}
    edit(golden)
    np.savez_compressed(path, **golden)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    _edit_manifest(root, lambda raw: raw["golden"].update(sha256=digest))


def nudge_first_probability(g: dict) -> None:
    g["probabilities"][0, 0] += np.float32(1e-3)


def _swap_first_two_labels(g: dict) -> None:
    g["label"][[0, 1]] = g["label"][[1, 0]]


def _normalised_tensors_only(g: dict) -> None:
    # A golden file written before the self-test started from pixels: no raw digits.
    g["image"] = g.pop("pixels").astype(np.float32)[:, None] / 255


def _mean(value: float):
    return lambda raw: raw["input"].update(mean=value)


def _std(value: float):
    return lambda raw: raw["input"].update(std=value)


def test_self_test_starts_from_the_golden_digits_pixels(bundle, mnist_test):
    m = manifest.load(bundle)
    assert Ensemble(m, device="cpu").self_test(m)["images"] >= 10
    with np.load(m.golden_file) as g:
        assert "image" not in g.files  # no normalised tensors that would bypass the manifest
        pixels, truth = g["pixels"], g["truth"]
    # MNIST test digits, as MNIST stores them (uint8, ink high), one of each digit at least.
    images, labels = mnist_test
    assert pixels.dtype == np.uint8 and set(truth) == set(range(10))
    for digit, label in zip(pixels, truth, strict=True):
        assert any(np.array_equal(digit, images[i]) for i in np.flatnonzero(labels == label))


@pytest.mark.parametrize(
    ("manifest_edit", "golden_edit", "reason"),
    [
        # Rounding mean or std to four digits is enough to change the answers' probabilities.
        (_mean(0.1307), None, "probabilities differ from golden.npz"),
        (_std(0.3081), None, "probabilities differ from golden.npz"),
        (_mean(0.5), None, "probabilities differ from golden.npz"),
        (lambda raw: raw["input"].update(ink="low"), None, "probabilities differ"),
        (None, nudge_first_probability, "probabilities differ from golden.npz by 1.00e-03"),
        (None, _swap_first_two_labels, "label differs from golden.npz"),
        (None, _normalised_tensors_only, "golden.npz is unusable"),
    ],
    ids=["mean", "std", "mean-0.5", "ink", "golden-probability", "golden-label", "old-golden"],
)
def test_a_manifest_or_golden_file_that_disagrees_stops_the_server_at_start(
    bundle, tmp_path, manifest_edit, golden_edit, reason
):
    root = _bundle_copy(bundle, tmp_path / "bundle")
    if manifest_edit:
        _edit_manifest(root, manifest_edit)
    if golden_edit:
        rewrite_golden(root, golden_edit)
    m = manifest.load(root)  # every sha256 still matches: only the self-test can tell
    with pytest.raises(SelfTestError, match=re.escape(reason)):
        Ensemble(m, device="cpu").self_test(m)
    assert reason in refused_start(root)


def refused_start(bundle: Path) -> str:
    """Starts `python -m server` on `bundle`, which must refuse it: exit 2 with one reason,
    no traceback. Returns the reason."""
    p = run("server", "--artifacts", str(bundle), "--port", "0", timeout=60)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    reasons = {
        line.split("cannot start: ", 1)[1]
        for line in p.stderr.splitlines()
        if "cannot start: " in line
    }
    assert len(reasons) == 1, p.stderr
    return reasons.pop()
