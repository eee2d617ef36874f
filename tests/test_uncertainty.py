"""The uncertainty rule export chooses from data (export/uncertainty.py) and the guard that
keeps a worse bundle from replacing the shipped one."""

import json

import numpy as np
import pytest

from export import uncertainty
from export.__main__ import ExportError, guard


def _probs(rng, n: int, top: tuple[float, float], models: int = 3, among=range(10)) -> np.ndarray:
    """[n, models, 10]: every model votes for the same random digit of `among` with a
    probability drawn from `top`, the rest spread evenly."""
    digit = rng.choice(list(among), n)
    p = rng.uniform(*top, (n, 1))
    out = np.repeat(((1 - p) / 9)[:, :, None], 10, axis=2).repeat(models, axis=1)
    out[np.arange(n), :, digit] = p
    return out.astype(np.float32)


def test_thresholds_meet_the_aim_on_every_digit_set_and_catch_the_spread_outliers():
    rng = np.random.default_rng(0)
    clean = _probs(rng, 2000, (0.9, 1.0))
    # Harder digits: 0.5 % of them as unsure as the outliers are, 3 % a little less.
    hard = np.concatenate(
        [_probs(rng, 1930, (0.6, 1.0)), _probs(rng, 60, (0.4, 0.5)), _probs(rng, 10, (0.1, 0.4))]
    )
    outliers = _probs(rng, 1000, (0.1, 0.4))
    truth = ("clean", clean[:, 0].argmax(1))
    rule = uncertainty.choose({"clean": clean, "hard": hard}, outliers, 0.01, truth)
    for probs in (clean, hard):
        assert uncertainty.rates(rule, probs)["flagged"] <= 0.01
    caught = uncertainty.rates(rule, outliers)
    # All but the few the aim cannot afford: between 0.4 and 0.5 lie 3 % of the hard digits.
    # Most as not a digit; not all, as a digit whose hard digits include two as unsure as the
    # outliers has its threshold among them.
    assert caught["flagged"] > 0.9 and caught["not_a_digit"] > 0.6


def test_disagreement_is_its_own_reason_and_not_a_digit_is_said_alone():
    rng = np.random.default_rng(1)
    split = _probs(rng, 10, (0.9, 1.0))
    split[:, 2] = np.roll(split[:, 2], 1, axis=1)  # the third model votes another digit
    spread = _probs(rng, 10, (0.12, 0.2))
    rule = {"not_a_digit_below": [0.3] * 10, "low_confidence_below": 0.5, "split_vote_below": 1.0}
    f = uncertainty.flags(rule, np.concatenate([split, spread]))
    assert f["models_disagree"][:10].all() and not f["not_a_digit"][:10].any()
    assert f["not_a_digit"][10:].all() and not f["low_confidence"][10:].any()


def test_each_voted_digit_has_its_own_not_a_digit_threshold():
    rng = np.random.default_rng(3)
    # Every 0 is read surely; doodles read as 0 less surely than any real 0, yet more surely
    # than many real digits of other kinds: one threshold for all could not flag them within
    # the aim.
    digits = np.concatenate(
        [
            _probs(rng, 200, (0.95, 1.0), among=[0]),
            _probs(rng, 1800, (0.5, 1.0), among=range(1, 10)),
        ]
    )
    doodles = _probs(rng, 300, (0.7, 0.9), among=[0])
    rule = uncertainty.choose({"digits": digits}, doodles, 0.01, ("digits", digits[:, 0].argmax(1)))
    assert uncertainty.rates(rule, digits)["flagged"] <= 0.01
    assert uncertainty.flags(rule, doodles)["not_a_digit"].all()
    assert rule["not_a_digit_below"][0] > 0.9 > max(rule["not_a_digit_below"][1:])


def test_split_votes_beyond_the_aim_are_flagged_where_the_vote_is_unsure():
    rng = np.random.default_rng(2)
    digits = _probs(rng, 1000, (0.95, 1.0))
    truth = digits[:, 0].argmax(1)
    # 3 % split votes: 24 sure of the voted digit (and right), 6 unsure (and wrong).
    digits[:24, 2] = np.roll(digits[:24, 2], 1, axis=1)  # the third model dissents
    digits[24:30, :2] = np.roll(digits[24:30, :2], 1, axis=2)  # two vote another digit
    digits[24:30] = 0.55 * digits[24:30] + 0.45 / 10
    outliers = _probs(rng, 500, (0.1, 0.3))
    rule = uncertainty.choose({"digits": digits}, outliers, 0.01, ("digits", truth))
    f = uncertainty.flags(rule, digits)
    assert uncertainty.rates(rule, digits)["flagged"] <= 0.01
    # The unsure ones all; of the sure ones at most what the aim leaves (10 - 6).
    assert f["models_disagree"][24:30].all() and f["models_disagree"][:24].sum() <= 4
    assert uncertainty.rates(rule, outliers)["flagged"] > 0.95


def _bundle(tmp_path, val_acc: float, **more):
    manifest = {"ensemble": {"val_acc": val_acc}, **more}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    return tmp_path


def test_export_refuses_to_replace_a_bundle_that_votes_better_on_validation(tmp_path):
    out = _bundle(tmp_path, 0.996)
    with pytest.raises(ExportError, match=r"99\.60 % on validation, this run 43\.08 %.*--force"):
        guard(out, 0.4308, force=False, with_check=False)
    guard(out, 0.4308, force=True, with_check=False)  # asked for
    guard(out, 0.9962, force=False, with_check=False)  # better
    guard(tmp_path / "empty", 0.4308, force=False, with_check=False)  # nothing shipped yet


def test_export_refuses_to_drop_the_whole_digit_check_a_bundle_ships(tmp_path):
    out = _bundle(tmp_path, 0.99, whole_digit={"file": "whole-digit.onnx"})
    with pytest.raises(ExportError, match=r"whole-digit check.*--whole-digit DIR.*--force"):
        guard(out, 0.995, force=False, with_check=False)
    guard(out, 0.995, force=False, with_check=True)  # shipped again
    guard(out, 0.995, force=True, with_check=False)  # asked for
