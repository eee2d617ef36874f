"""The ensemble's vote, written once in torch ops that also export to ONNX.

Rule: the digit most of the models predict wins. When no digit has a majority (all three
disagree), the tie is broken among the tied digits by the highest probability summed over
the models. Evaluation uses this function, and export traces it into the ensemble graph the
server runs, so training, export and serving apply the same rule.
"""

from __future__ import annotations

import torch

RULE = (
    "majority of the models' labels; if no digit has the most votes alone, the tied digit "
    "with the highest summed probability wins"
)


def vote(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """probs [M, N, C] -> (label [N] int64, votes [N, C] int64, tie_broken [N] bool)."""
    num_models, _, num_classes = probs.shape
    labels = probs.argmax(dim=2)  # [M, N]
    classes = torch.arange(num_classes, device=probs.device)
    votes = (labels.unsqueeze(2) == classes).sum(dim=0)  # [N, C]
    summed = probs.sum(dim=0)  # [N, C], at most M
    # A vote outweighs any summed probability (each sum is < M + 1), so the sum only decides
    # between digits with equally many votes.
    score = votes.to(probs.dtype) * (num_models + 1) + summed
    label = score.argmax(dim=1)
    top = votes.max(dim=1).values
    tie_broken = (votes == top.unsqueeze(1)).sum(dim=1) > 1
    return label, votes, tie_broken
