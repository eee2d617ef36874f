"""Images in, answers out: preprocessing, one batched run of the ensemble graph, the verdict.

Everything the answer says is computed here from plain arrays, so it is testable without HTTP.
"""

from __future__ import annotations

import base64
import io
import logging
from dataclasses import dataclass

import numpy as np
from PIL import Image

from server import segment
from server.answers import (
    Digit,
    DigitShape,
    DigitWithImage,
    ModelOpinion,
    NumberPreprocessing,
    NumberReading,
    Prediction,
    PredictionWithImage,
    Preprocessing,
)
from server.batch_pool import BatchPool
from server.ensemble import Ensemble, Outputs
from server.errors import ApiError, InferenceFailed
from server.manifest import Manifest, Uncertainty
from server.preprocess import Preprocessed, Shape, as_value, preprocess_many

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UncertaintyRule:
    """When an answer is flagged `uncertain`, and why, with the thresholds the manifest holds.

    `not_a_digit`: the models, trained to spread their probability on non-digits, do (their
    mean highest probability is low for the digit they vote). Unsure which digit: the models
    disagree with a low enough mean probability for the voted digit, or that probability is
    low whatever the vote. And the fitted image's shape: a more filled-in shape, or more ink,
    than MNIST's digits have.
    """

    spec: Uncertainty

    def reasons(
        self,
        label: int,
        confidence: float,
        typicality: float,
        agreement: int,
        models: int,
        shape: Shape,
    ) -> list[str]:
        u = self.spec
        not_a_digit = typicality < u.not_a_digit_below[label]
        checks = {
            "not_a_digit": not_a_digit,
            "models_disagree": agreement < models and confidence < u.split_vote_below,
            # Implied by not_a_digit (confidence is at most typicality): said once.
            "low_confidence": not not_a_digit and confidence < u.low_confidence_below,
            "filled_shape": shape.edge_ratio < u.min_edge_ratio,
            "too_much_ink": shape.ink > u.max_ink,
        }
        return [name for name, failed in checks.items() if failed]

    def describe(self) -> str:
        u = self.spec
        return (
            f"uncertain with a reason: {u.rule}; not_a_digit_below "
            f"{' '.join(f'{t:.4f}' for t in u.not_a_digit_below)} (by voted digit, 0 first), "
            f"low_confidence_below {u.low_confidence_below:.4f}, split_vote_below "
            f"{u.split_vote_below:.4f}, min_edge_ratio {u.min_edge_ratio:g}, max_ink "
            f"{u.max_ink:g}"
        )


def png_base64(pixels: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(pixels, "L").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


class Predictor:
    def __init__(
        self,
        manifest: Manifest,
        ensemble: Ensemble,
        max_pixels: int,
        rule: UncertaintyRule | None = None,
        helpers: BatchPool | None = None,
    ):
        self.manifest = manifest
        self.ensemble = ensemble
        self.max_pixels = max_pixels
        self.rule = rule or UncertaintyRule(manifest.uncertainty)
        self.helpers = helpers
        # The whole-digit check's threshold: a candidate digit scored under it is doubted.
        self.doubt = manifest.whole_digit.below if manifest.whole_digit else 0.0

    def prepare_many(self, images: list[bytes]) -> list[Preprocessed | ApiError]:
        return preprocess_many(images, self.manifest.input, self.max_pixels)

    def predict(
        self, images: list[bytes], include_image: bool = False
    ) -> list[Prediction | ApiError]:
        """One answer per image, in order: a Prediction, or the ApiError that image raised.
        With helpers, a large batch is preprocessed in slices in parallel, and each slice runs
        through the models as soon as it is ready."""
        slices = (
            self.helpers.slices(images, self.prepare_many)
            if self.helpers is not None
            else [(0, self.prepare_many(images))]
        )
        answers: list = [None] * len(images)
        for start, prepared in slices:
            answers[start : start + len(prepared)] = self._answer_all(prepared, include_image)
        return answers

    def _answer_all(
        self, prepared: list[Preprocessed | ApiError], include_image: bool
    ) -> list[Prediction | ApiError]:
        good = [p for p in prepared if isinstance(p, Preprocessed)]
        if not good:
            return prepared  # type: ignore[return-value]
        # One image (most requests): a view, not np.stack's copy.
        batch = good[0].tensor[None] if len(good) == 1 else np.stack([p.tensor for p in good])
        verdicts = iter(self._verdicts(self._run(batch), [p.shape for p in good]))
        return [
            p if isinstance(p, ApiError) else self._answer(next(verdicts), p, include_image)
            for p in prepared
        ]

    def _answer(self, fields: dict, p: Preprocessed, include_image: bool) -> Prediction:
        fields["preprocessing"] = Preprocessing(
            source_size=list(p.source_size),
            inverted=p.inverted,
            components_kept=p.components_kept,
            components_dropped=p.components_dropped,
            lines_removed=p.lines_removed,
            ink=round(p.shape.ink, 4),
            pieces=p.shape.parts,
            edge_ratio=round(p.shape.edge_ratio, 4),
        )
        if include_image:
            return PredictionWithImage(
                **fields, image="data:image/png;base64," + png_base64(p.pixels)
            )
        return Prediction(**fields)

    def _verdicts(self, out: Outputs, shapes: list[Shape], first: int = 0) -> list[dict]:
        """The fields of an answers.Verdict for images first, first + 1, ... of `out`, one per
        shape: the vote, its doubts, each model. Figured for all of them at once: numpy's cost
        is per call, and a batch pays it once instead of once an image."""
        rows = slice(first, first + len(shapes))
        probs = out.probabilities[rows]  # [images, models, classes]
        labels = out.label[rows]
        models = probs.shape[1]
        # np.mean's values, at less cost.
        confidence = (probs[np.arange(len(labels)), :, labels].sum(1) / models).tolist()
        typicality = (probs.max(2).sum(1) / models).tolist()  # each model's highest, averaged
        votes = out.votes[rows].tolist()
        # One vectorised rounding, not a round() call per probability; in float64, so that
        # 2e-06 reads 2e-06 and not float32's nearest, 1.9999999949504854e-06.
        rounded = probs.astype(np.float64).round(6).tolist()
        model_labels = probs.argmax(2).tolist()
        tie_broken = out.tie_broken[rows].tolist()
        names = self.manifest.model_names
        verdicts = []
        for i, label in enumerate(labels.tolist()):
            agreement = votes[i][label]
            reasons = self.rule.reasons(
                label, confidence[i], typicality[i], agreement, models, shapes[i]
            )
            verdicts.append(
                dict(
                    label=label,
                    confidence=round(confidence[i], 6),
                    votes=votes[i],
                    agreement=agreement,
                    tie_broken=tie_broken[i],
                    uncertain=bool(reasons),
                    uncertain_reasons=reasons,
                    models=[
                        ModelOpinion(name, label_m, max(row), row)
                        for name, label_m, row in zip(
                            names, model_labels[i], rounded[i], strict=True
                        )
                    ],
                )
            )
        return verdicts

    def read_numbers(
        self, images: list[bytes], include_image: bool = False
    ) -> list[NumberReading | ApiError]:
        """One answer per image, in order: the number it holds, or the ApiError it raised.
        Each image's digits go through the models together (server/segment.py)."""
        answers: list[NumberReading | ApiError] = []
        for data in images:
            try:
                number = segment.segment(
                    data, self.manifest.input, self.max_pixels, self._read, self.doubt
                )
            except ApiError as e:
                if isinstance(e, InferenceFailed):
                    raise
                answers.append(as_value(e))
                continue
            answers.append(self._number(number, include_image))
        return answers

    def _read(self, batch: np.ndarray) -> Outputs:
        """A number's candidate digits: the models' reading and the whole-digit check's."""
        return self._run(batch, whole=True)

    def _run(self, batch: np.ndarray, whole: bool = False) -> Outputs:
        try:
            return self.ensemble.run(batch, whole=whole)
        except Exception as e:  # a fault in the runtime, not in the request
            log.exception("inference failed on a batch of %d", len(batch))
            raise InferenceFailed("The models could not run; try again later.") from e

    def _number(self, number: segment.Number, include_image: bool) -> NumberReading:
        digits: list[Digit | DigitWithImage] = []
        for d in number.digits:
            p = d.prepared
            fields = self._verdicts(d.out, [p.shape], d.index)[0]
            # The whole-digit check doubts it: two touching digits read as one, a part of a
            # digit, a digit with a slice of another.
            if d.out.whole is not None and d.out.whole[d.index] < self.doubt:
                fields["uncertain_reasons"].append("not_one_digit")
                fields["uncertain"] = True
            fields["box"] = list(d.box)
            fields["shape"] = DigitShape(
                pieces=p.shape.parts,
                ink=round(p.shape.ink, 4),
                edge_ratio=round(p.shape.edge_ratio, 4),
            )
            if include_image:
                image = "data:image/png;base64," + png_base64(p.pixels)
                digits.append(DigitWithImage(**fields, image=image))
            else:
                digits.append(Digit(**fields))
        return NumberReading(
            number="".join(self.manifest.classes[d.label] for d in digits),
            digits=digits,
            uncertain=any(d.uncertain for d in digits),
            preprocessing=NumberPreprocessing(
                source_size=list(number.source_size),
                inverted=number.inverted,
                components_kept=number.kept,
                components_dropped=number.dropped,
                lines_removed=number.lines,
                cuts=number.cuts,
            ),
        )
