"""Every knob of a training run, as dataclasses with defaults that work.

`VARIANTS` holds the three recipes side by side, so how they differ reads in one place.
Command-line flags fill `RunConfig`; `--set NAME.SECTION.FIELD=VALUE` changes one field of a
recipe (the tuner uses the same mechanism).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

from training.augment import AugmentConfig
from training.model import ModelArgs


@dataclass
class OptimConfig:
    optimizer: str = "adam"  # adam (decoupled weight decay, i.e. AdamW) | sgd (Nesterov)
    lr: float = 3e-3  # peak learning rate of the schedule
    weight_decay: float = 1e-4
    momentum: float = 0.9  # sgd only
    schedule: str = "onecycle"  # onecycle | cosine (with linear warm-up)
    warmup: float = 0.2  # fraction of the steps spent warming up
    epochs: int = 60
    batch_size: int = 128
    label_smoothing: float = 0.0
    ema: float = 0.999  # decay of the weight average that is validated and saved; 0 = off
    patience: int = 0  # stop after this many epochs without a better validation score; 0 = never
    # Outlier exposure: non-digits added to every batch, trained towards the uniform
    # distribution (Hendrycks et al. 2019 used as many as digits and weight 0.5).
    outlier_batch: int = 64
    outlier_weight: float = 0.5
    # With --init: weight of the KL divergence from the starting model's probabilities on the
    # (augmented) digits, so fine-tuning keeps what it knew ("learning without forgetting").
    keep: float = 0.0
    # With --teacher: weight of the KL divergence from the teacher's probabilities softened
    # at `temperature` on the same augmented digits, times temperature squared so that its
    # gradients keep their scale (Hinton et al. 2015, "Distilling the knowledge in a neural
    # network").
    distill: float = 1.0
    temperature: float = 4.0

    def __post_init__(self):
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError("optimizer must be adam or sgd")
        if self.schedule not in ("onecycle", "cosine"):
            raise ValueError("schedule must be onecycle or cosine")


@dataclass
class VariantConfig:
    name: str
    seed: int
    why: str  # what this recipe contributes to the committee
    model: ModelArgs = field(default_factory=ModelArgs)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


# What preprocessing leaves of real uploads, the same for every recipe: blurred and
# low-resolution digits, and stray strokes at the edges.
ROBUST = {"blur": 0.5, "lowres": 0.1, "fragments": 0.1}

VARIANTS: dict[str, VariantConfig] = {
    v.name: v
    for v in (
        VariantConfig(
            name="lenet5-classic-sgd",
            seed=2,
            why="closest to 1998: ELU, average pooling, 28x28 input, no norm; SGD+Nesterov, "
            "cosine; strong affine augmentation",
            model=ModelArgs(activation="elu", pool="avg", norm="none", dropout=0.2, pad=0),
            optim=OptimConfig(
                optimizer="sgd",
                lr=0.05,
                weight_decay=5e-4,
                schedule="cosine",
                warmup=0.05,
                epochs=20,
            ),
            augment=AugmentConfig(
                rotate=15.0, scale=0.15, shear=10.0, translate=2.5, **ROBUST, stroke=0.2
            ),
        ),
        VariantConfig(
            name="lenet5-relu-adam",
            seed=1,
            why="ReLU, max pooling, the original 32x32 input; AdamW, one-cycle; affine + "
            "elastic augmentation",
            model=ModelArgs(activation="relu", pool="max", norm="none", dropout=0.1, pad=2),
            optim=OptimConfig(
                optimizer="adam",
                lr=3e-3,
                weight_decay=0.05,
                schedule="onecycle",
                warmup=0.2,
                epochs=20,
            ),
            augment=AugmentConfig(elastic_alpha=0.5, **ROBUST, stroke=0.2),
        ),
        VariantConfig(
            name="lenet5-bn-gelu",
            seed=3,
            why="batch norm, GELU, average pooling, 32x32 input; SGD+Nesterov, one-cycle; "
            "affine + stroke-width augmentation",
            model=ModelArgs(activation="gelu", pool="avg", norm="batch", dropout=0.1, pad=2),
            optim=OptimConfig(
                optimizer="sgd",
                lr=0.1,
                weight_decay=5e-4,
                schedule="onecycle",
                warmup=0.2,
                epochs=20,
            ),
            augment=AugmentConfig(**ROBUST, stroke=0.3),
        ),
    )
}


# Teachers for knowledge distillation (--teacher): trained by the same pipeline, never shipped
# (export refuses them). LeNet-5's layers four times as wide, batch norm, ReLU, max pooling, on
# lenet5-bn-gelu's schedule and lenet5-relu-adam's augmentation.
TEACHER = VariantConfig(
    name="teacher-wide",
    seed=4,
    why="a stronger model whose probabilities the shipped recipes learn from",
    model=ModelArgs(activation="relu", pool="max", norm="batch", dropout=0.3, pad=2, width=4),
    optim=copy.deepcopy(VARIANTS["lenet5-bn-gelu"].optim),
    augment=copy.deepcopy(VARIANTS["lenet5-relu-adam"].augment),
)
TEACHERS: dict[str, VariantConfig] = {TEACHER.name: TEACHER}


# Epochs of every recipe by profile. "default" is each recipe's own, short enough that a
# run of all three takes about 12 minutes on a 2-core CPU; "ship" is the longer schedule
# the shipped bundle is trained with.
PROFILES = {"default": 0, "ship": 45}


@dataclass
class RunConfig:
    out: str = "runs/latest"
    data_dir: str | None = None  # falls back to $MNIST_DIR, then data/mnist
    download: bool = False
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # CPU threads per training process; 0 = the cores shared among the jobs
    jobs: int = 0  # recipes trained at once, one process each; 0 = all of them
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    val_size: int = 5000  # held out of the 60k training images, stratified
    subset: int = 0  # train on a stratified subset of this many images; 0 = all
    balanced: bool = False  # draw every class equally often
    profile: str = "default"  # a key of PROFILES
    epochs: int = 0  # overrides every recipe's epochs (and the profile's) when > 0
    split_seed: int = 0
    deterministic: bool = False
    resume: bool = False
    smoke: bool = False
    init: str | None = None  # a bundle folder: start each recipe from its ONNX model there
    teacher: str | None = None  # a teacher's checkpoint (best.pt) the recipes distil from
    outliers: int = 30_000  # generated non-digits for outlier exposure; 0 = none
    printed: int = 3000  # digits typeset in the installed fonts, added to training; 0 = none
    overrides: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError("device must be auto, cpu or cuda")
        if self.jobs < 0:
            raise ValueError("jobs must be 0 (automatic) or more")
        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {list(PROFILES)}")
        self.epochs = self.epochs or PROFILES[self.profile]
        known = [*VARIANTS, *TEACHERS]
        unknown = set(self.variants) - set(known)
        if unknown:
            raise ValueError(f"unknown variant(s) {sorted(unknown)}; known: {known}")
        if self.smoke:
            # One short epoch on a small stratified subset: the whole pipeline in seconds.
            self.subset = self.subset or 1000
            self.val_size = min(self.val_size, 500)
            self.epochs = 1
            self.outliers = min(self.outliers, 600)
            self.printed = min(self.printed, 100)


def _coerce(text: str, current):
    if isinstance(current, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"expected true or false, got {text!r}")
        return text.lower() in ("true", "1")
    return type(current)(text)


def apply_override(variants: dict[str, VariantConfig], spec: str) -> None:
    """Applies 'name.section.field=value' (or 'name.seed=value') in place."""
    path, sep, value = spec.partition("=")
    parts = path.split(".")
    if not sep or len(parts) not in (2, 3) or parts[0] not in variants:
        raise ValueError(f"--set {spec!r}: expected VARIANT.SECTION.FIELD=VALUE")
    target = variants[parts[0]]
    for name in parts[1:-1]:
        target = getattr(target, name, None)
    fields = {f.name for f in dataclasses.fields(target)} if target is not None else set()
    if parts[-1] not in fields:
        raise ValueError(f"--set {spec!r}: no such field")
    setattr(target, parts[-1], _coerce(value, getattr(target, parts[-1])))
    if hasattr(target, "__post_init__"):
        target.__post_init__()


def resolve_variants(cfg: RunConfig) -> list[VariantConfig]:
    """The recipes this run trains, with --set and --epochs applied to copies."""
    variants = copy.deepcopy(VARIANTS | TEACHERS)
    for spec in cfg.overrides:
        apply_override(variants, spec)
    chosen = [variants[name] for name in cfg.variants]
    for v in chosen:
        if cfg.epochs:
            v.optim.epochs = cfg.epochs
    return chosen
