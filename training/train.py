"""The training loop for one recipe, on CPU or CUDA, with the whole dataset on the device;
and several recipes at once, one process each."""

from __future__ import annotations

import copy
import ctypes
import dataclasses
import math
import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from training import checkpoint, printed
from training.augment import augment
from training.config import RunConfig, VariantConfig
from training.data import BatchSampler, Mnist, load_mnist, one_hot
from training.ema import EMA
from training.model import LeNet5, build
from training.nondigits import NonDigits, generate
from training.warmstart import load_onnx


class TrainingError(Exception):
    """A run that cannot start or continue as asked. The message is one line for the user."""


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda was asked for, but torch sees no CUDA GPU")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def configure_torch(cfg: RunConfig, device: torch.device) -> None:
    if device.type == "cpu":
        # torch's default can count hyper-threads or the whole host inside a container.
        torch.set_num_threads(cfg.threads or len(os.sched_getaffinity(0)))
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # warn_only: a CUDA kernel without a deterministic twin warns instead of stopping a run.
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True
    # Training runs under bf16 autocast on CUDA; everything outside it (validation, test
    # scores) stays true float32, so a run scores what the exported float32 models will.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def build_optimizer(model: LeNet5, v: VariantConfig, device: torch.device) -> torch.optim.Optimizer:
    o = v.optim
    # No weight decay on biases and norm parameters: decaying them only costs accuracy.
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": o.weight_decay},
        {"params": rest, "weight_decay": 0},
    ]
    # On CUDA one fused kernel updates every parameter instead of a launch per tensor; the
    # CPU keeps the per-tensor loop the shipped models were trained with.
    fused = device.type == "cuda"
    if o.optimizer == "adam":
        return torch.optim.AdamW(groups, lr=o.lr, fused=fused)
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=True, fused=fused)


def _scheduler(opt, v: VariantConfig, total_steps: int):
    o = v.optim
    if o.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=o.lr, total_steps=total_steps, pct_start=o.warmup
        )
    warm = max(1, int(o.warmup * total_steps))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total_steps - warm))))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _autocast(device: torch.device):
    # bf16 needs no loss scaling; on CPU fp32 is faster than emulated low precision.
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def normalise(images_u8: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    return (images_u8.to(torch.float32) / 255.0 - mean) / std


@torch.no_grad()
def predict_probs(
    model: LeNet5, images_u8: torch.Tensor, mean: float, std: float, batch: int = 2000
) -> torch.Tensor:
    """Softmax probabilities [N, 10] (float32) for uint8 images [N, 1, 28, 28]."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for chunk in images_u8.split(batch):
        # No autocast: bf16 scores moved the test vote of a CUDA run by one image against the
        # float32 ONNX export of the same weights.
        logits = model(normalise(chunk.to(device), mean, std))
        out.append(logits.softmax(dim=1))
    return torch.cat(out)


def outliers_for(cfg: RunConfig, device: torch.device) -> tuple[torch.Tensor | None, NonDigits]:
    """The generated non-digits of outlier exposure, uint8 [N, 1, 28, 28] on `device` (None
    when --outliers 0), and what was made. Seeded: every process makes the same images."""
    if not cfg.outliers:
        return None, NonDigits(np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.int64))
    made = generate(cfg.outliers, seed=cfg.split_seed, part="train")
    if not len(made.images):
        return None, made
    return torch.from_numpy(made.images).unsqueeze(1).to(device), made


Typeset = tuple[np.ndarray, np.ndarray]  # typeset digits uint8 [N, 28, 28], labels int64 [N]


def printed_for(cfg: RunConfig) -> Typeset:
    """The typeset digits added to training (training/printed.py); seeded, so every process
    would make the same, but they are made once and handed to the training processes."""
    if not cfg.printed:
        return printed.empty()
    return printed.generate(cfg.printed, seed=cfg.split_seed, part="train")


def with_printed(data: Mnist, typeset: Typeset) -> Mnist:
    """`data` with the typeset digits after MNIST's training digits. The normalisation stays
    MNIST's: it is what the server applies to every upload."""
    images, labels = typeset
    if not len(labels):
        return data
    device = data.train_x.device
    x = torch.from_numpy(images).unsqueeze(1).to(device)
    y = torch.from_numpy(labels).to(device)
    return dataclasses.replace(
        data, train_x=torch.cat([data.train_x, x]), train_y=torch.cat([data.train_y, y])
    )


def load_teacher(path: str, data: Mnist, device: torch.device) -> LeNet5:
    """The teacher of --teacher, frozen. Its normalisation must be this run's: the mean and
    std are measured on the training split, so a teacher of another split (which may have
    trained on this run's validation digits) is refused."""
    teacher, ckpt = checkpoint.load(Path(path), map_location=device)
    norm = ckpt["normalisation"]
    if not (math.isclose(norm["mean"], data.mean) and math.isclose(norm["std"], data.std)):
        raise TrainingError(
            f"{path}: the teacher was trained on another split of MNIST (normalisation "
            f"{norm['mean']:.6f}/{norm['std']:.6f}, this run's {data.mean:.6f}/{data.std:.6f}); "
            "train it with this run's --val-size, --subset and --split-seed"
        )
    return teacher.eval().requires_grad_(False)


def _kl_from(
    reference: LeNet5, x: torch.Tensor, logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """KL divergence of the model's probabilities (`logits` on `x`) from a frozen reference
    model's on the same images, both softened at `temperature`."""
    with torch.no_grad():
        target = (reference(x).float() / temperature).log_softmax(dim=1)
    return F.kl_div(
        (logits / temperature).log_softmax(dim=1), target, log_target=True, reduction="batchmean"
    )


def _validate(model, data: Mnist) -> tuple[float, float]:
    probs = predict_probs(model, data.val_x, data.mean, data.std)
    loss = F.nll_loss(probs.clamp_min(1e-12).log(), data.val_y).item()
    acc = (probs.argmax(1) == data.val_y).float().mean().item()
    return loss, acc


def train_variant(
    v: VariantConfig,
    data: Mnist,
    cfg: RunConfig,
    device: torch.device,
    out_dir: Path,
    outliers: torch.Tensor | None = None,
    progress: bool = True,
) -> dict:
    """Trains one recipe; writes best.pt and last.pt under out_dir/<name>/; returns its record."""
    vdir = out_dir / v.name
    vdir.mkdir(parents=True, exist_ok=True)
    # Before the seed: building the teacher draws random weights, which would change this
    # recipe's own draws.
    teacher = load_teacher(cfg.teacher, data, device) if cfg.teacher else None
    torch.manual_seed(v.seed)
    gen = torch.Generator(device=device).manual_seed(v.seed)
    model = build(dataclasses.replace(v.model, pad_value=-data.mean / data.std)).to(device)
    start = None
    if cfg.init:
        load_onnx(
            model,
            Path(cfg.init) / f"{v.name}.onnx",
            normalise(data.train_x[:4096], data.mean, data.std),
        )
    if cfg.init and v.optim.keep > 0:
        start = copy.deepcopy(model).eval().requires_grad_(False)
    opt = build_optimizer(model, v, device)
    # The exponential moving average of the weights is what gets validated and shipped: under
    # heavy augmentation it is smoother and more accurate than the last step's weights.
    ema = EMA(model, v.optim.ema) if v.optim.ema else None
    final = ema.module if ema is not None else model
    sampler = BatchSampler(data.train_y, v.optim.batch_size, cfg.balanced, gen)
    sched = _scheduler(opt, v, v.optim.epochs * len(sampler))
    norm = {"mean": data.mean, "std": data.std}
    history: list[dict] = []
    best = {"val_acc": -1.0, "val_loss": math.inf, "epoch": 0}
    start_epoch = 1
    expose = outliers is not None and v.optim.outlier_batch > 0 and v.optim.outlier_weight > 0

    last_path = vdir / "last.pt"
    if cfg.resume and last_path.exists():
        model_, state = checkpoint.load(last_path, map_location=device)
        if state["variant"] != dataclasses.asdict(v):
            raise TrainingError(f"{last_path}: recipe changed since this checkpoint; cannot resume")
        model.load_state_dict(model_.state_dict())
        if ema is not None:
            ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"].to(gen.get_state().device))
        torch.set_rng_state(state["torch_rng"])
        history, best, start_epoch = state["history"], state["best"], state["epoch"] + 1
        tqdm.write(f"{v.name}: resuming after epoch {state['epoch']}")

    for epoch in range(start_epoch, v.optim.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        total_loss = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.int64)
        seen = 0
        bar = tqdm(
            sampler,
            desc=f"{v.name} {epoch}/{v.optim.epochs}",
            leave=False,
            disable=None if progress else True,
        )
        for idx in bar:
            x, y = data.train_x[idx], data.train_y[idx]
            if expose:
                pick = torch.randint(
                    len(outliers), (v.optim.outlier_batch,), generator=gen, device=device
                )
                # One batch through the model, as Hendrycks et al. do: batch norm sees both.
                x = torch.cat([x, outliers[pick]])
            x = augment(x.to(torch.float32) / 255.0, v.augment, gen)
            x = (x - data.mean) / data.std
            with _autocast(device):
                logits = model(x)
            digits = logits[: len(y)].float()
            if v.optim.label_smoothing > 0:
                loss = F.cross_entropy(digits, one_hot(y, v.optim.label_smoothing))
            else:
                loss = F.cross_entropy(digits, y)
            if start is not None:
                loss = loss + v.optim.keep * _kl_from(start, x[: len(y)], digits)
            if teacher is not None:
                t = v.optim.temperature
                loss = loss + v.optim.distill * t * t * _kl_from(teacher, x[: len(y)], digits, t)
            if expose:
                # Cross-entropy to the uniform distribution over the ten digits.
                spread = -logits[len(y) :].float().log_softmax(dim=1).mean(dim=1).mean()
                loss = loss + v.optim.outlier_weight * spread
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if ema is not None:
                ema.update(model)
            # Accumulate on the device: a .item() per step would stall a GPU on every batch.
            total_loss += loss.detach() * len(y)
            correct += (digits.argmax(1) == y).sum()
            seen += len(y)
        seconds = time.perf_counter() - t0
        val_loss, val_acc = _validate(final, data)
        record = {
            "epoch": epoch,
            "train_loss": total_loss.item() / seen,
            "train_acc": correct.item() / seen,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": opt.param_groups[0]["lr"],
            "seconds": seconds,
        }
        history.append(record)
        improved = (val_acc, -val_loss) > (best["val_acc"], -best["val_loss"])
        if improved:
            best = {"val_acc": val_acc, "val_loss": val_loss, "epoch": epoch}
            checkpoint.save(vdir / "best.pt", final, norm, v, epoch=epoch, val_acc=val_acc)
        checkpoint.save(
            last_path,
            model,
            norm,
            v,
            epoch=epoch,
            history=history,
            best=best,
            optimizer=opt.state_dict(),
            scheduler=sched.state_dict(),
            ema=ema.state_dict() if ema is not None else None,
            generator=gen.get_state(),
            torch_rng=torch.get_rng_state(),
        )
        # Printed once the epoch is on disk: a run stopped after this line resumes after it.
        tqdm.write(
            f"{v.name:<20} epoch {epoch:>3}/{v.optim.epochs}  loss {record['train_loss']:.4f}  "
            f"val_loss {val_loss:.4f}  val_acc {100 * val_acc:6.2f}%  lr {record['lr']:.2e}  "
            f"{seconds:5.1f}s ({seen / seconds:,.0f} img/s){'  *' if improved else ''}"
        )
        # From the restored `best`, so a resumed run keeps its patience window.
        epochs_since_best = epoch - best["epoch"]
        if v.optim.patience and epochs_since_best >= v.optim.patience:
            tqdm.write(f"{v.name}: no better validation score for {epochs_since_best} epochs, stop")
            break
    return {"name": v.name, "history": history, "best": best}


def jobs_for(cfg: RunConfig, device: torch.device, recipes: int) -> int:
    """How many recipes train at once, each in its own process. On CUDA, all: one left an H100
    mostly idle (three at once trained about three times the images per second of one). On
    the CPU, all too, each with its share of the cores: LeNet-5's tensors are too small to
    split across threads, and an op split over two threads waits whenever another program
    holds one of the cores (one recipe, 20,000 images, on this 2-core machine with other jobs
    running: 305 images/s with 2 threads, 2,564 with 1)."""
    return max(1, min(cfg.jobs or recipes, recipes))


def threads_per_job(cfg: RunConfig, device: torch.device, jobs: int) -> int:
    """CPU threads of each training process: --threads, or the cores shared among the jobs."""
    if cfg.threads or device.type != "cpu":
        return cfg.threads or torch.get_num_threads()
    return max(1, len(os.sched_getaffinity(0)) // jobs)


PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent exits


def _die_with_parent(parent: int) -> None:
    """A training process stops when the run's process is killed (a SIGTERM, the OOM killer):
    left alone it would train on for an hour with no one to hand its results to."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # gone before the call
            os._exit(1)


def _train_in_worker(
    v: VariantConfig, cfg: RunConfig, data_dir: Path, out_dir: Path, outliers, typeset: Typeset
) -> list:
    sys.stdout.reconfigure(line_buffering=True)  # epoch lines as they happen, not at exit
    device = pick_device(cfg.device)
    configure_torch(cfg, device)
    data = load_mnist(data_dir, device, cfg.val_size, cfg.subset, cfg.split_seed)
    data = with_printed(data, typeset)
    if outliers is not None:
        outliers = outliers.to(device)
    return train_variant(v, data, cfg, device, out_dir, outliers, progress=False)["history"]


def train_recipes(
    variants: list[VariantConfig],
    data: Mnist,
    cfg: RunConfig,
    device: torch.device,
    out_dir: Path,
    data_dir: Path,
    typeset: Typeset,
    outliers: torch.Tensor | None = None,
) -> dict[str, list]:
    """Trains every recipe, `jobs_for` of them at a time; returns each one's history. `data`
    already holds the `typeset` digits; training processes add them to their own copy."""
    jobs = jobs_for(cfg, device, len(variants))
    if jobs == 1:
        return {
            v.name: train_variant(v, data, cfg, device, out_dir, outliers)["history"]
            for v in variants
        }
    if device.type == "cpu":
        cfg = dataclasses.replace(cfg, threads=threads_per_job(cfg, device, jobs))
    # Spawned, not forked: a forked child cannot use CUDA. Each worker loads its own copy of
    # the data (55 MB, simpler than sharing device memory) and gets the non-digits made once
    # here; progress bars would overwrite each other, so workers print their epoch lines only.
    context = multiprocessing.get_context("spawn")
    spare = None if outliers is None else outliers.cpu()
    try:
        with ProcessPoolExecutor(
            jobs, mp_context=context, initializer=_die_with_parent, initargs=(os.getpid(),)
        ) as pool:
            futures = {
                v.name: pool.submit(_train_in_worker, v, cfg, data_dir, out_dir, spare, typeset)
                for v in variants
            }
            return {name: future.result() for name, future in futures.items()}
    except BrokenProcessPool:
        # A worker killed from outside (out of memory, a signal) leaves no exception to show.
        raise TrainingError(
            "a training process died without a word (out of memory?); the epochs it finished "
            "are saved: continue with --resume"
        ) from None
