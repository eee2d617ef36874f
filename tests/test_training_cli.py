"""End to end: `python -m training --smoke` as a user runs it."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench import procs
from export.__main__ import ExportError, load_run
from tests.live import ROOT, run
from training import checkpoint
from training.__main__ import parse_args
from training.config import PROFILES, VARIANTS, RunConfig, resolve_variants
from training.evaluate import confusion
from training.train import jobs_for, predict_probs, threads_per_job


def start_training(*args) -> subprocess.Popen:
    """A run in the background, its output read line by line as it comes, that an interrupt
    stops as it would stop a run in a terminal: a suite started as a background job (`cmd &`
    in a script) ignores SIGINT, and a child inherits that, so the run's is set back."""
    return subprocess.Popen(
        [sys.executable, "-u", "-m", "training", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def run_training(*args: str) -> subprocess.CompletedProcess:
    return run("training", *args, timeout=600)


def test_smoke_run_writes_checkpoints_metrics_and_plots(smoke_run, mnist_test):
    out, proc = smoke_run
    for name in VARIANTS:
        assert (out / name / "best.pt").is_file() and (out / name / "last.pt").is_file()
    for png in ("augment.png", "curves.png", "confusion.png", "errors.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["models"]) == set(VARIANTS)
    assert metrics["test_size"] == 10_000
    # The figures are those of the checkpoints written: each model's test accuracy and
    # confusion matrix measured again here from its best.pt (a smoke run trains one short
    # epoch, so no level of accuracy is expected).
    images, labels = (torch.from_numpy(a) for a in mnist_test)
    for name, m in metrics["models"].items():
        model, ckpt = checkpoint.load(out / name / "best.pt")
        preds = predict_probs(model, images[:, None], **ckpt["normalisation"]).argmax(1)
        assert m["test_acc"] == pytest.approx((preds == labels).float().mean().item(), abs=1e-6)
        assert m["confusion"] == confusion(labels, preds).tolist() and len(m["per_class_acc"]) == 10
    vote = metrics["vote"]
    assert vote["errors"] == round((1 - vote["test_acc"]) * 10_000)
    assert {"pairs", "all_wrong", "any_wrong"} <= set(metrics["error_overlap"])
    assert "vote" in proc.stdout and "epoch   1/1" in proc.stdout


def test_smoke_checkpoint_records_normalisation_and_padding(smoke_run):
    out, _ = smoke_run
    run = json.loads((out / "run.json").read_text())
    model, ckpt = checkpoint.load(out / "lenet5-bn-gelu" / "best.pt")
    norm = ckpt["normalisation"]
    assert norm == run["normalisation"]
    assert model.args.pad_value == pytest.approx(-norm["mean"] / norm["std"])
    assert len(run["data_sha256"]) == 4


def test_resume_of_a_finished_run_trains_nothing_more(smoke_run, mnist_dir, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(smoke_run[0], out)  # the shared run stays as it was
    before = torch.load(out / "lenet5-bn-gelu" / "last.pt", weights_only=True)["history"]
    proc = run_training("--smoke", "--resume", "--data-dir", str(mnist_dir), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "resuming after epoch 1" in proc.stdout + proc.stderr
    after = torch.load(out / "lenet5-bn-gelu" / "last.pt", weights_only=True)["history"]
    assert after == before


def test_interrupted_run_resumes_to_the_same_weights(mnist_dir, tmp_path):
    args = [
        "--variants",
        "lenet5-classic-sgd",
        "--subset",
        "4000",
        "--val-size",
        "500",
        "--epochs",  # enough after the first that the interrupt lands mid-run on a fast machine
        "12",
        "--outliers",  # few non-digits: a quick test that resuming keeps drawing the same ones
        "1000",
        "--threads",
        "1",
        "--data-dir",
        str(mnist_dir),
    ]
    assert run_training(*args, "--out", str(tmp_path / "straight")).returncode == 0

    proc = start_training(*args, "--out", str(tmp_path / "cut"))
    for line in proc.stdout:
        if "epoch   1/12" in line:
            proc.send_signal(signal.SIGINT)
            break
    assert proc.wait(timeout=120) == 130
    assert "continue with --resume" in proc.stderr.read()

    resumed = run_training(*args, "--resume", "--out", str(tmp_path / "cut"))
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch 1" in resumed.stdout
    straight = torch.load(tmp_path / "straight/lenet5-classic-sgd/last.pt", weights_only=True)
    cut = torch.load(tmp_path / "cut/lenet5-classic-sgd/last.pt", weights_only=True)
    assert [h["epoch"] for h in cut["history"]] == list(range(1, 13))
    for key, value in straight["state_dict"].items():
        assert torch.allclose(value, cut["state_dict"][key], atol=1e-6), key
    # The weight average is what ships: it must pick up where it stopped, too.
    for key, value in straight["ema"].items():
        if isinstance(value, torch.Tensor):
            assert torch.allclose(value, cut["ema"][key], atol=1e-6), key
        else:
            assert value == cut["ema"][key], key


def test_recipes_trained_side_by_side_match_those_trained_in_turn(mnist_dir, tmp_path):
    common = ["--smoke", "--threads", "1", "--data-dir", str(mnist_dir)]
    common += ["--variants", "lenet5-classic-sgd", "lenet5-bn-gelu"]
    side = run_training(*common, "--jobs", "2", "--out", str(tmp_path / "side"))
    assert side.returncode == 0, side.stderr
    assert "2 recipe(s) at a time" in side.stdout and "vote" in side.stdout
    turn = run_training(*common, "--jobs", "1", "--out", str(tmp_path / "turn"))
    assert turn.returncode == 0, turn.stderr
    for name in ("lenet5-classic-sgd", "lenet5-bn-gelu"):
        a = torch.load(tmp_path / "side" / name / "best.pt", weights_only=True)["state_dict"]
        b = torch.load(tmp_path / "turn" / name / "best.pt", weights_only=True)["state_dict"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def two_recipes_training(mnist_dir, tmp_path) -> tuple[subprocess.Popen, list[int]]:
    """A run of two recipes side by side, once both have finished an epoch, and the process
    ids of their training processes."""
    # No non-digits or typeset digits: drawing the defaults would take longer than the epoch
    # it waits for.
    args = ["--jobs", "2", "--threads", "1", "--subset", "2000", "--val-size", "500"]
    args += ["--epochs", "50", "--outliers", "0", "--printed", "0"]
    args += ["--variants", "lenet5-classic-sgd", "lenet5-bn-gelu"]
    args += ["--data-dir", str(mnist_dir), "--out", str(tmp_path)]
    proc = start_training(*args)
    for line in proc.stdout:
        if "epoch   1/50" in line:
            break
    workers = [
        pid
        for pid in procs.children(proc.pid)
        if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    assert len(workers) == 2
    return proc, workers


def test_a_worker_killed_from_outside_is_a_clear_error(mnist_dir, tmp_path):
    proc, workers = two_recipes_training(mnist_dir, tmp_path)
    os.kill(workers[0], signal.SIGKILL)  # as the kernel's out-of-memory killer would
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert err.startswith("error: a training process died") and "--resume" in err
    assert "Traceback" not in err


def test_training_processes_stop_when_the_run_is_killed(mnist_dir, tmp_path):
    proc, workers = two_recipes_training(mnist_dir, tmp_path)
    proc.kill()  # SIGKILL: the run itself gets no chance to stop them
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in workers):
        time.sleep(0.1)
    alive = [p for p in workers if Path(f"/proc/{p}").exists()]
    for p in alive:  # never leave them training on
        os.kill(p, signal.SIGKILL)
    assert not alive, "training processes outlived the run"


def test_resume_refuses_a_changed_recipe(smoke_run, mnist_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(smoke_run[0], run)  # the shared run stays as it was
    args = ["--smoke", "--data-dir", str(mnist_dir), "--out", str(run), "--resume"]
    proc = run_training(*args, "--set", "lenet5-classic-sgd.optim.lr=0.1")
    assert proc.returncode == 2 and "recipe changed" in proc.stderr


def test_the_ship_profile_trains_longer_and_epochs_override_any_profile():
    def epochs(*argv):
        return {v.optim.epochs for v in resolve_variants(parse_args(list(argv)))}

    assert max(epochs()) < min(epochs("--profile", "ship")) == PROFILES["ship"]
    assert epochs("--profile", "ship", "--epochs", "3") == epochs("--epochs", "3") == {3}
    assert epochs("--profile", "ship", "--smoke") == {1}


def test_on_the_cpu_every_recipe_trains_at_once_on_its_share_of_the_cores(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(2)))
    assert jobs_for(RunConfig(), cpu, 3) == 3
    assert threads_per_job(RunConfig(), cpu, 3) == 1  # never fewer than one
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    assert threads_per_job(RunConfig(), cpu, 3) == 5
    assert threads_per_job(RunConfig(threads=2), cpu, 3) == 2
    assert jobs_for(RunConfig(jobs=1), cpu, 3) == 1


def test_bad_override_is_rejected_before_any_work():
    proc = run_training("--set", "lenet5-bn-gelu.optim.nonsense=1")
    assert proc.returncode == 2 and "no such field" in proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_cuda_without_a_gpu_is_an_error_not_a_fallback(mnist_dir, tmp_path):
    proc = run_training(
        "--smoke", "--device", "cuda", "--data-dir", str(mnist_dir), "--out", str(tmp_path)
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: --device cuda")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_smoke_run_on_cuda(mnist_dir, tmp_path):
    proc = run_training(
        "--smoke", "--device", "cuda", "--data-dir", str(mnist_dir), "--out", str(tmp_path)
    )
    assert proc.returncode == 0, proc.stderr
    assert "device cuda" in proc.stdout


def test_recipes_distil_from_a_teacher_trained_on_the_same_split(mnist_dir, tmp_path):
    common = ["--smoke", "--threads", "1", "--data-dir", str(mnist_dir)]
    teacher = run_training(*common, "--variants", "teacher-wide", "--out", str(tmp_path / "t"))
    assert teacher.returncode == 0, teacher.stderr
    path = tmp_path / "t" / "teacher-wide" / "best.pt"
    model, _ = checkpoint.load(path)
    assert model.args.width == 4 and model.features[0].out_channels == 24
    student = [*common, "--variants", "lenet5-relu-adam"]
    mute = ["--set", "lenet5-relu-adam.optim.distill=0"]
    runs = {
        "taught": ["--teacher", str(path)],
        "muted": ["--teacher", str(path), *mute],
        "alone": [],
    }
    weights = {}
    for name, args in runs.items():
        proc = run_training(*student, *args, "--out", str(tmp_path / name))
        assert proc.returncode == 0, proc.stderr
        best = tmp_path / name / "lenet5-relu-adam" / "best.pt"
        weights[name] = torch.load(best, weights_only=True)["state_dict"]
    run_json = json.loads((tmp_path / "taught" / "run.json").read_text())
    assert run_json["config"]["teacher"] == str(path)

    def same(a: str, b: str) -> bool:
        return all(torch.equal(weights[a][k], weights[b][k]) for k in weights[a])

    # Seeds fixed and one thread: a teacher given no weight changes nothing, the teacher's
    # probabilities change what is learnt.
    assert same("muted", "alone") and not same("taught", "alone")
    # A teacher of another split may have trained on this run's validation digits.
    other = run_training(
        *student, "--teacher", str(path), "--val-size", "400", "--out", str(tmp_path / "o")
    )
    assert other.returncode == 2 and "another split" in other.stderr, other.stderr
    with pytest.raises(ExportError, match="teacher"):
        load_run(tmp_path / "t")
