"""Reads artifacts/manifest.json, the one source of truth written by export, and checks the
files it names against their sha256 before anything is loaded."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

SUPPORTED_SCHEMA = 1


class ManifestError(Exception):
    """The bundle is missing, altered or not one this server understands. One line."""


@dataclass(frozen=True)
class InputSpec:
    name: str
    height: int
    width: int
    mean: float
    std: float
    ink_high: bool  # the models saw ink as high values (MNIST: white digit on black)
    digit_box: int  # the longer side of the digit's ink box, in pixels
    centre_of_mass: tuple[float, float]  # row, column, 0-based


@dataclass(frozen=True)
class Uncertainty:
    """When an answer is flagged, as export chose it from data (see the manifest's text)."""

    not_a_digit_below: tuple[float, ...]  # the models' mean highest probability, by voted digit
    low_confidence_below: float  # their mean probability for the voted digit
    split_vote_below: float  # a split vote's mean probability for the voted digit
    min_edge_ratio: float  # of the fitted image: below is a filled shape
    max_ink: float  # of the fitted image: above is a blot
    rule: str  # the rule in words, for GET /models


@dataclass(frozen=True)
class WholeDigitCheck:
    """The number mode's check that a digit is one whole digit (export/whole_digit.py)."""

    file: Path  # one output: float32 [N], the probability of one whole digit
    below: float  # a digit scored under this is not one whole digit


@dataclass(frozen=True)
class Manifest:
    input: InputSpec
    classes: list[str]
    model_names: list[str]
    model_files: dict[str, Path]
    ensemble_file: Path
    vote_file: Path  # the vote alone: the members' probabilities in, the ensemble's vote out
    golden_file: Path
    golden_atol: float
    output_order: list[str]  # the ensemble graph's outputs, in the order it returns them
    uncertainty: Uncertainty
    summary: dict  # what GET /models answers, taken from the manifest once, at load
    whole_digit: WholeDigitCheck | None = None  # a bundle may ship without it


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _checked(root: Path, entry: dict, what: str) -> Path:
    path = root / entry["file"]
    if path.name != entry["file"] or not path.is_file():
        raise ManifestError(f"{what} file {entry['file']!r} is missing from {root}")
    if _sha256(path) != entry["sha256"]:
        raise ManifestError(
            f"{path} does not match its sha256 in the manifest (altered or truncated)"
        )
    return path


MODEL_FIELDS = ("name", "file", "sha256", "parameters", "architecture", "recipe")
SCORES = ("val_acc", "test_acc")


def _summary(raw: dict) -> dict:
    """The bundle as GET /models and the web page show it; a missing field fails the load."""
    e = raw["ensemble"]
    return {
        "name": raw["name"],
        "input": raw["input"],
        "classes": raw["classes"],
        "models": [{k: m[k] for k in MODEL_FIELDS + SCORES} for m in raw["models"]],
        "ensemble": {k: e[k] for k in ("file", "sha256", "members", "vote_rule", *SCORES)},
        "provenance": {k: raw["provenance"][k] for k in ("created", "git", "versions")},
        **(
            {"whole_digit": {k: raw["whole_digit"][k] for k in ("file", "sha256", "below", "rule")}}
            if "whole_digit" in raw
            else {}
        ),
    }


def _uncertainty(u: dict, classes: int) -> Uncertainty:
    limits = {
        k: float(u[k])
        for k in ("low_confidence_below", "split_vote_below", "min_edge_ratio", "max_ink")
    }
    by_digit = u["not_a_digit_below"]
    if not isinstance(by_digit, list) or len(by_digit) != classes:
        raise ValueError(
            f"uncertainty: not_a_digit_below must list one threshold per class ({classes}); "
            "`python -m export.calibrate --out BUNDLE` chooses them for an older bundle"
        )
    by_digit = tuple(float(v) for v in by_digit)
    if not all(0.0 <= v <= 1.0 for v in (*limits.values(), *by_digit)):
        raise ValueError(f"uncertainty thresholds must lie in [0, 1]: {u}")
    return Uncertainty(not_a_digit_below=by_digit, **limits, rule=str(u["rule"]))


def _whole_digit(root: Path, entry: dict | None, spec: dict) -> WholeDigitCheck | None:
    if entry is None:
        return None
    if entry["inputs"].get(spec["name"]) != [None, 1, spec["height"], spec["width"]]:
        raise ManifestError(
            f"{root / 'manifest.json'}: whole_digit's input is not the models' ({entry['inputs']})"
        )
    if len(entry["outputs"]) != 1:
        raise ValueError(f"whole_digit: one output, not {list(entry['outputs'])}")
    below = float(entry["below"])
    if not 0.0 <= below <= 1.0:
        raise ValueError(f"whole_digit: below must lie in [0, 1], not {below}")
    return WholeDigitCheck(_checked(root, entry, "whole_digit"), below)


def load(root: Path) -> Manifest:
    path = root / "manifest.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"{path} not found: point --artifacts at an exported bundle") from None
    except (OSError, ValueError) as e:
        raise ManifestError(f"{path} is not readable JSON ({e})") from None
    try:
        if raw.get("schema_version") != SUPPORTED_SCHEMA:
            raise ManifestError(
                f"{path}: schema_version {raw.get('schema_version')!r}, this server reads "
                f"{SUPPORTED_SCHEMA}"
            )
        spec = raw["input"]
        if spec["ink"] not in ("high", "low") or spec["layout"] != "NCHW":
            raise ManifestError(f"{path}: input ink/layout not understood")
        classes = [str(c) for c in raw["classes"]]
        graph = raw["ensemble"]
        # The facts the graph was exported with must be the ones the server will use.
        if graph["inputs"].get(spec["name"]) != [None, 1, spec["height"], spec["width"]]:
            raise ManifestError(
                f"{path}: input {spec['name']!r} [N, 1, {spec['height']}, {spec['width']}] is not "
                f"the ensemble's input ({graph['inputs']})"
            )
        if graph["outputs"]["votes"][-1] != len(classes):
            raise ManifestError(
                f"{path}: {len(classes)} classes, but the ensemble votes over "
                f"{graph['outputs']['votes'][-1]}"
            )
        model_files = {m["name"]: _checked(root, m, f"model {m['name']!r}") for m in raw["models"]}
        ensemble = _checked(root, raw["ensemble"], "ensemble")
        vote = _checked(root, raw["vote"], "vote")
        golden = _checked(root, raw["golden"], "golden")
        return Manifest(
            input=InputSpec(
                name=spec["name"],
                height=int(spec["height"]),
                width=int(spec["width"]),
                mean=float(spec["mean"]),
                std=float(spec["std"]),
                ink_high=spec["ink"] == "high",
                digit_box=int(spec["digit_box"]),
                centre_of_mass=(float(spec["centre_of_mass"][0]), float(spec["centre_of_mass"][1])),
            ),
            classes=classes,
            model_names=list(raw["ensemble"]["members"]),
            model_files=model_files,
            ensemble_file=ensemble,
            vote_file=vote,
            golden_file=golden,
            golden_atol=float(raw["golden"]["atol"]),
            output_order=list(raw["ensemble"]["output_order"]),
            uncertainty=_uncertainty(raw["uncertainty"], len(classes)),
            summary=_summary(raw),
            whole_digit=_whole_digit(root, raw.get("whole_digit"), spec),
        )
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ManifestError(f"{path}: malformed manifest ({type(e).__name__}: {e})") from None
