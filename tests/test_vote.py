"""The vote rule: training/vote.py on hand-made probabilities, and the served vote against
each answer's own per-model probabilities."""

import numpy as np
import torch

from tests.conftest import post_batches
from training.vote import vote


def probs_for(*rows):
    """Each row: per-model probability lists for one image -> tensor [M, N, 10]."""
    return torch.tensor(rows, dtype=torch.float32).permute(1, 0, 2)


def peaked(digit, p=0.9, second=None, q=0.0):
    row = [(1 - p - q) / 8] * 10
    row[digit] = p
    if second is not None:
        row[second] = q
    total = sum(row)
    return [v / total for v in row]


def test_unanimous_vote():
    label, votes, tie = vote(probs_for([peaked(7), peaked(7), peaked(7)]))
    assert label.tolist() == [7] and votes[0, 7] == 3 and not tie[0]


def test_majority_wins_even_against_a_more_confident_minority():
    # Models 1 and 2 say 3 weakly; model 3 is sure of 8, whose summed probability is higher.
    p = [peaked(3, 0.35, 8, 0.33), peaked(3, 0.35, 8, 0.33), peaked(8, 0.99)]
    label, votes, tie = vote(probs_for(p))
    assert probs_for(p)[:, 0].sum(0).argmax() == 8  # soft voting would have said 8
    assert label.tolist() == [3] and votes[0].tolist()[3] == 2 and not tie[0]


def test_three_way_tie_goes_to_the_highest_summed_probability():
    p = [peaked(1, 0.5, 4, 0.3), peaked(4, 0.6), peaked(9, 0.7)]
    label, votes, tie = vote(probs_for(p))
    # sums: 1 -> 0.5 + ..., 4 -> 0.3 + 0.6 = 0.9, 9 -> 0.7 + ...
    assert label.tolist() == [4] and tie.tolist() == [True]
    assert sorted(torch.nonzero(votes[0]).flatten().tolist()) == [1, 4, 9]


def test_tie_break_only_considers_the_tied_digits():
    # Digit 5 has the largest summed probability but no model's vote: it cannot win.
    p = [peaked(1, 0.40, 5, 0.39), peaked(2, 0.40, 5, 0.39), peaked(3, 0.41, 5, 0.39)]
    label, _, tie = vote(probs_for(p))
    assert label.tolist() == [3] and tie.tolist() == [True]


def test_batch_of_mixed_cases():
    p = probs_for(
        [peaked(0), peaked(0), peaked(0)],
        [peaked(2), peaked(6), peaked(2)],
        [peaked(1, 0.5), peaked(7, 0.6), peaked(4, 0.55)],
    )
    label, votes, tie = vote(p)
    assert label.tolist() == [0, 2, 7] and tie.tolist() == [False, False, True]
    assert votes.sum(1).tolist() == [3, 3, 3]


def _recount(probabilities: np.ndarray) -> tuple[int, np.ndarray, bool, set[int]]:
    """The vote rule written out on one answer's per-model probabilities [M, 10]: each model
    votes for its most probable digit, the most votes win, and a tie goes to the tied digit
    with the largest summed probability. Returns (label, votes, tie_broken, labels that the
    answer's six-decimal rounding cannot tell apart from the label)."""
    picks = probabilities.argmax(1)
    votes = np.bincount(picks, minlength=10)
    tied = np.flatnonzero(votes == votes.max())
    sums = probabilities.sum(0)
    label = int(tied[np.argmax(sums[tied])])
    close = {int(d) for d in tied if sums[d] >= sums[label] - 1e-5}
    return label, votes, len(tied) > 1, close


def test_served_vote_follows_the_models_own_probabilities_on_every_answer(
    shared_server, served_mnist, mnist_test
):
    # Every MNIST test digit, plus 500 overlays of two test digits, on which the models
    # disagree often enough that three-way ties (the tie-break) are certain to be among them.
    images, _ = mnist_test
    answers = served_mnist + post_batches(
        shared_server.url, np.maximum(images[:500], images[500:1000])
    )
    assert len(answers) == 10_500
    ties = splits = 0
    for i, a in enumerate(answers):
        probs = np.array([m["probabilities"] for m in a["models"]])
        label, votes, tie_broken, close = _recount(probs)
        assert [m["label"] for m in a["models"]] == probs.argmax(1).tolist(), i
        assert a["votes"] == votes.tolist(), i
        assert a["tie_broken"] is tie_broken, i
        assert a["label"] in close, (i, a["label"], label)
        assert a["agreement"] == votes[a["label"]], i
        ties += tie_broken
        splits += votes.max() == 2
    assert ties >= 1 and splits >= 1, (ties, splits)
