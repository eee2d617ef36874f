"""PNG figures a person checks: augmented samples, learning curves, confusion, mistakes."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on training boxes
import matplotlib.pyplot as plt
import numpy as np
import torch


def _save(fig, path: Path) -> None:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def augmentation_grid(rows: dict[str, torch.Tensor], originals: torch.Tensor, path: Path) -> None:
    """First row: originals; then one row per recipe of their augmented versions (all [K,1,H,W])."""
    k = len(originals)
    fig, axes = plt.subplots(
        len(rows) + 1, k, figsize=(k * 0.9, (len(rows) + 1) * 1.05), squeeze=False
    )
    for r, (title, images) in enumerate([("original", originals), *rows.items()]):
        for c in range(k):
            ax = axes[r][c]
            ax.imshow(images[c, 0].cpu().numpy(), cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(title, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle("augmentation: originals and one random draw per recipe", fontsize=9)
    _save(fig, path)


def learning_curves(histories: dict[str, list[dict]], path: Path) -> None:
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for name, history in histories.items():
        epochs = [h["epoch"] for h in history]
        (line,) = ax_loss.plot(epochs, [h["train_loss"] for h in history], label=f"{name} train")
        ax_loss.plot(
            epochs,
            [h["val_loss"] for h in history],
            "--",
            color=line.get_color(),
            label=f"{name} val",
        )
        ax_acc.plot(
            epochs, [100 * h["val_acc"] for h in history], color=line.get_color(), label=name
        )
    ax_loss.set(xlabel="epoch", ylabel="loss", yscale="log", title="loss (train is augmented)")
    ax_acc.set(xlabel="epoch", ylabel="validation accuracy (%)", title="validation accuracy")
    ax_acc.set_ylim(bottom=max(97.0, ax_acc.get_ylim()[0]))  # the interesting part is near 100
    ax_loss.legend(fontsize=7)
    ax_acc.legend(fontsize=7)
    ax_acc.grid(alpha=0.3)
    _save(fig, path)


def confusion_matrix(cm: list[list[int]], path: Path, title: str) -> None:
    cm = np.asarray(cm)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    fig, ax = plt.subplots(figsize=(6, 5.2))
    # Colour shows the mistakes; the diagonal would drown them.
    im = ax.imshow(off, cmap="Reds")
    for (i, j), v in np.ndenumerate(cm):
        if v:
            ax.text(
                j,
                i,
                str(v),
                ha="center",
                va="center",
                fontsize=7,
                color="black" if i != j else "#1b5e20",
            )
    ax.set(
        xticks=range(10),
        yticks=range(10),
        xlabel="predicted",
        ylabel="true digit",
        title=f"confusion on MNIST test ({title}); colour = errors",
    )
    fig.colorbar(im, ax=ax, fraction=0.046)
    _save(fig, path)


def misclassified(
    images: torch.Tensor,
    truth: torch.Tensor,
    voted: torch.Tensor,
    each: torch.Tensor,
    path: Path,
    limit: int = 100,
) -> None:
    """Grid of wrongly voted test digits: true digit, vote and each model's label."""
    n = min(len(images), limit)
    cols = 10
    rows = max(1, (n + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.35), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(images[i, 0].numpy(), cmap="gray_r")
        models = "".join(str(int(d)) for d in each[i])
        ax.set_title(f"{int(truth[i])}→{int(voted[i])} ({models})", fontsize=7)
    fig.suptitle(
        f"{len(images)} test digits the vote gets wrong: true→voted (each model's label)",
        fontsize=9,
    )
    _save(fig, path)
