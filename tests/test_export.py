"""End to end: `python -m export` on the shared smoke training run, as a user runs it.

One good export writes a bundle over a previous one (the shipped bundle plus a model it has
since retired); the tests then check what it wrote, what it removed, and that a damaged run
leaves that bundle as it was.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from export.verify import VerificationError, verify
from server import manifest
from server.ensemble import Ensemble
from server.preprocess import preprocess
from tests import live
from tests.live import LiveServer
from tests.test_ensemble import nudge_first_probability, refused_start, rewrite_golden
from tests.uploads import png, predict_labels
from training import checkpoint

RETIRED = "lenet5-retired.onnx"  # a model of the previous bundle that the new one lacks
UNLISTED = "NOTES.txt"  # a file no manifest lists: export never removes those


def run_export(run: Path, out: Path, mnist_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    args = ["--run", str(run), "--out", str(out), "--data-dir", str(mnist_dir), *extra]
    return live.run("export", *args, timeout=600)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (staging folders included) and its sha256."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def train_check(folder: Path, mnist_dir: Path, *extra: str) -> Path:
    """A smoke run of `python -m training.whole_digit` in `folder`."""
    args = ["--smoke", "--data-dir", str(mnist_dir), "--out", str(folder), *extra]
    proc = live.run("training.whole_digit", *args, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return folder


@pytest.fixture(scope="module")
def exported(smoke_run, bundle, mnist_dir, tmp_path_factory):
    """The smoke run exported into a folder holding a previous bundle; (out, process, the
    previous bundle's file names)."""
    run, _ = smoke_run
    out = tmp_path_factory.mktemp("export") / "artifacts"
    shutil.copytree(bundle, out)
    previous = json.loads((out / "manifest.json").read_text())
    retired = dict(previous["models"][0], name=Path(RETIRED).stem, file=RETIRED)
    shutil.copy(out / previous["models"][0]["file"], out / RETIRED)
    previous["models"].append(retired)
    (out / "manifest.json").write_text(json.dumps(previous))
    (out / UNLISTED).write_text("the operator's notes\n")
    before = {p.name for p in out.iterdir()}
    split = json.loads((run / "run.json").read_text())
    check = train_check(
        tmp_path_factory.mktemp("whole-digit"),
        mnist_dir,
        *("--val-size", str(split["val_size"]), "--split-seed", str(split["split_seed"])),
    )
    # --force: the smoke run's models vote far worse on validation than the shipped ones.
    proc = run_export(run, out, mnist_dir, "--force", "--whole-digit", str(check))
    assert proc.returncode == 0, proc.stderr
    return out, proc, before


def test_a_run_that_votes_worse_on_validation_does_not_replace_the_bundle(
    smoke_run, bundle, mnist_dir, tmp_path
):
    out = tmp_path / "artifacts"
    shutil.copytree(bundle, out)
    before = snapshot(out)
    proc = run_export(smoke_run[0], out, mnist_dir)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "on validation" in last and "--force" in last, last
    assert snapshot(out) == before


def test_a_bundle_without_the_whole_digit_check_does_not_replace_one_with_it(
    smoke_run, bundle, mnist_dir, tmp_path
):
    # The shipped bundle has the check; an export without --whole-digit is refused before any
    # work, and names both ways on. (Its vote marked lowest, so that the smoke run's does not
    # decide.)
    out = tmp_path / "artifacts"
    shutil.copytree(bundle, out)
    shipped = json.loads((out / "manifest.json").read_text())
    assert "whole_digit" in shipped
    shipped["ensemble"]["val_acc"] = 0.0
    (out / "manifest.json").write_text(json.dumps(shipped))
    before = snapshot(out)
    proc = run_export(smoke_run[0], out, mnist_dir)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "whole-digit check" in last and "--whole-digit DIR" in last and "--force" in last, last
    assert snapshot(out) == before


def test_exported_bundle_loads_passes_the_self_test_and_serves(exported, smoke_run, mnist_test):
    out, proc, _ = exported
    run = json.loads((smoke_run[0] / "run.json").read_text())
    m = manifest.load(out)  # every file present and matching its sha256
    assert m.model_names == run["variants"]
    assert (m.input.mean, m.input.std) == (
        run["normalisation"]["mean"],
        run["normalisation"]["std"],
    )
    result = Ensemble(m, device="cpu").self_test(m)
    assert result["images"] == 16 and result["max_abs_diff"] <= m.golden_atol
    with np.load(m.golden_file) as g:
        assert g["pixels"].dtype == np.uint8 and "image" not in g.files
    # The accuracies export measured on the ONNX files are the training run's own.
    trained = json.loads((smoke_run[0] / "metrics.json").read_text())
    shipped = json.loads((out / "metrics.json").read_text())
    for name in run["variants"]:
        assert shipped["models"][name]["test_acc"] == pytest.approx(
            trained["models"][name]["test_acc"], abs=2e-4
        )
    for line in proc.stdout.splitlines()[:3]:
        assert line.split()[0] in {f"{n}.onnx" for n in run["variants"]}
    # And the real server starts on it and answers what the ensemble graph answers.
    images, _ = mnist_test
    s = LiveServer("--artifacts", str(out), "--workers", "1", "--device", "cpu")
    try:
        served = predict_labels(s.url, images[:16])
    finally:
        assert s.stop() == 0, s.log
    assert "self-test passed on 16 images" in s.log
    # Sixteen labels in 0-9 are any server's: the smoke models' own votes, image by image.
    tensors = np.stack([preprocess(png(img), m.input, 10**8).tensor for img in images[:16]])
    assert served == Ensemble(m, device="cpu").run(tensors).label.tolist()


def test_the_whole_digit_check_ships_proven_and_with_its_threshold(exported, mnist_test):
    out, proc, _ = exported
    m = manifest.load(out)  # its file present and matching its sha256
    check = json.loads((out / "metrics.json").read_text())["whole_digit"]
    assert m.whole_digit is not None and 0.0 < m.whole_digit.below < 1.0
    assert check["parity_max_abs_diff"] <= m.golden_atol
    # The threshold leaves the aim's share of whole validation digits under it, no more.
    assert check["flagged_by_kind"]["whole"] <= 0.01 + 1e-9
    assert "not one whole digit below" in proc.stdout
    # The server's session of it scores the bundle's own input, and the model card says how.
    images, _ = mnist_test
    tensors = np.stack([preprocess(png(img), m.input, 10**8).tensor for img in images[:8]])
    ensemble = Ensemble(m, device="cpu")
    scores = ensemble.run(tensors, whole=True).whole
    assert scores.shape == (8,) and ((scores >= 0) & (scores <= 1)).all()
    assert ensemble.run(tensors).whole is None  # a single digit's answer does not run it
    assert "## Reading a number: the whole-digit check" in (out / "MODEL_CARD.md").read_text()


def test_a_whole_digit_check_trained_on_another_split_is_refused(
    smoke_run, bundle, mnist_dir, tmp_path
):
    out = tmp_path / "artifacts"
    shutil.copytree(bundle, out)
    before = snapshot(out)
    check = train_check(tmp_path / "check", mnist_dir, "--val-size", "4000")
    proc = run_export(smoke_run[0], out, mnist_dir, "--force", "--whole-digit", str(check))
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: whole-digit check: trained on the split"), proc.stderr
    assert snapshot(out) == before


def test_files_of_the_previous_bundle_that_the_new_one_lacks_are_removed(exported):
    out, _, before = exported
    after = {p.name for p in out.iterdir()}
    assert RETIRED in before and RETIRED not in after
    assert UNLISTED in after and (out / UNLISTED).read_text() == "the operator's notes\n"
    assert not [n for n in after if n.startswith(".export-")]  # no staging folder left
    listed = json.loads((out / "manifest.json").read_text())
    files = {e["file"] for e in listed["models"]} | {
        listed[k]["file"] for k in ("ensemble", "vote", "whole_digit")
    }
    assert files <= after and {f for f in after if f.endswith(".onnx")} == files


def _nan_weights(run: Path) -> None:
    """A checkpoint that loads but whose first layer is NaN, as a diverged run leaves it."""
    path = run / "lenet5-relu-adam" / "best.pt"
    ckpt = torch.load(path, weights_only=True)
    name = next(k for k in ckpt["state_dict"] if k.endswith("weight"))
    ckpt["state_dict"][name] = torch.full_like(ckpt["state_dict"][name], float("nan"))
    torch.save(ckpt, path)


def _flipped_bytes(run: Path) -> None:
    path = run / "lenet5-bn-gelu" / "best.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2 :] = bytes(len(data) - len(data) // 2)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_nan_weights, "lenet5-relu-adam.onnx: the model answers NaN or infinite probabilities"),
        (_flipped_bytes, "not a readable checkpoint"),
    ],
    ids=["nan-weights", "flipped-bytes"],
)
def test_a_tampered_checkpoint_fails_and_leaves_the_bundle_untouched(
    exported, smoke_run, mnist_dir, tmp_path, damage, reason
):
    out, _, _ = exported
    run = tmp_path / "run"
    shutil.copytree(smoke_run[0], run)
    damage(run)
    before = snapshot(out)
    proc = run_export(run, out, mnist_dir, "--force")
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and reason in last, proc.stderr
    assert "Traceback" not in proc.stderr
    assert snapshot(out) == before  # byte for byte, and no staging folder left behind


def test_verification_fails_when_an_onnx_file_is_not_its_model(smoke_run, exported, mnist_test):
    out, _, _ = exported
    run = json.loads((smoke_run[0] / "run.json").read_text())
    models = [checkpoint.load(smoke_run[0] / n / "best.pt")[0] for n in run["variants"]]
    files = [out / f"{n}.onnx" for n in run["variants"]]
    norm = run["normalisation"]
    x = ((mnist_test[0][:64].astype(np.float32) / 255 - norm["mean"]) / norm["std"])[:, None]
    assert verify(models, files, out / "ensemble.onnx", x)["images"] == 64
    with pytest.raises(VerificationError, match="probabilities differ from PyTorch"):
        verify(models, [files[1], files[0], files[2]], out / "ensemble.onnx", x)


def test_a_golden_file_that_disagrees_stops_the_exported_bundle_at_start(exported, tmp_path):
    out, _, _ = exported
    copy = tmp_path / "bundle"
    shutil.copytree(out, copy)
    rewrite_golden(copy, nudge_first_probability)  # its sha256 fixed up: only the self-test sees
    manifest.load(copy)
    reason = refused_start(copy)
    assert reason.startswith("self-test: probabilities differ from golden.npz by 1.00e-03")
