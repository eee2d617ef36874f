"""The typeset digits added to training (training/printed.py)."""

import json

import numpy as np
import onnxruntime as ort

from training import nondigits, printed


def test_typeset_digits_are_balanced_fitted_as_mnist_and_labelled_right(bundle):
    images, labels = printed.generate(200, seed=0)
    assert images.shape == (200, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels, minlength=10).tolist() == [20] * 10
    for img in images:
        rows, cols = np.flatnonzero(img.max(1)), np.flatnonzero(img.max(0))
        assert 19 <= max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 <= 21
    # The labels are the digits drawn: the shipped models, which never saw a typeset digit,
    # read most of them so (a label shifted by one would leave about a tenth).
    spec = json.loads((bundle / "manifest.json").read_text())["input"]
    session = ort.InferenceSession(str(bundle / "ensemble.onnx"))
    x = ((images.astype(np.float32) / 255 - spec["mean"]) / spec["std"])[:, None]
    label = session.run(["label"], {session.get_inputs()[0].name: x})[0]
    assert (label == labels).mean() > 0.9


def test_training_and_the_benchmark_never_share_a_font_and_dingbats_are_no_digits():
    train, held = printed.digit_fonts("train"), printed.digit_fonts("held")
    assert train and held and not set(train) & set(held)
    assert set(held) <= set(nondigits.split(nondigits.fonts(), "held"))
    names = {p.stem for p in train + held}
    assert "D050000L" not in names and "LinBiolinum_K" not in names


def test_without_fonts_there_are_none(tmp_path):
    images, labels = printed.generate(30, seed=0, font_dirs=(tmp_path,))
    assert images.shape == (0, 28, 28) and labels.shape == (0,)
