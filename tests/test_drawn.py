"""Digits drawn with pens unlike MNIST's: thin strokes on a large canvas, ruler-straight
strokes as long as a form's lines, and a form's lines that still go beside them."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from bench import synth
from server import manifest
from server.config import ServerConfig
from server.ensemble import Ensemble
from server.errors import NoInk
from server.predictor import Predictor
from server.preprocess import STROKE, THIN, preprocess, stroke_width, tighten
from tests.test_preprocess import CAP, SPEC, encode


@pytest.fixture(scope="module")
def predictor(bundle):
    m = manifest.load(bundle)
    return Predictor(m, Ensemble(m, device="cpu"), ServerConfig.max_pixels)


def _arc(cx, cy, rx, ry, start, stop, n=24):
    t = np.radians(np.linspace(start, stop, n))
    return list(zip(cx + rx * np.cos(t), cy - ry * np.sin(t), strict=True))


# Each digit's strokes in a 200 x 300 box, as someone draws them with a mouse or a stylus.
STROKES = {
    0: [_arc(100, 150, 70, 140, 90, 450)],
    3: [_arc(100, 75, 70, 75, 150, -90, 16) + _arc(100, 225, 80, 75, 90, -150, 16)],
    8: [_arc(100, 75, 55, 75, -90, 270), _arc(100, 225, 70, 75, 90, 450)],
    # Ruler-straight: the bars and stems are as long as a form's lines.
    7: [[(10, 0), (190, 0), (70, 300)]],
    4: [[(140, 300), (140, 0), (10, 210), (190, 210)]],
    2: [[*_arc(100, 85, 70, 85, 160, -30, 16), (10, 300), (190, 300)]],
    5: [[(170, 0), (40, 0), (30, 125), *_arc(100, 205, 75, 95, 140, -150, 18)]],
    1: [[(100, 0), (100, 300)]],
}


def drawn(digit: int, pen: int, side: int = 400) -> Image.Image:
    """`digit` drawn black on a white `side` px canvas, `pen` px wide, its box in the middle."""
    im = Image.new("L", (side, side), 255)
    d = ImageDraw.Draw(im)
    x0, y0 = (side - 200) / 2, (side - 300) / 2
    for line in STROKES[digit]:
        d.line([(x0 + x, y0 + y) for x, y in line], fill=0, width=pen, joint="curve")
    return im


def test_stroke_width_is_the_width_of_a_line():
    def line(width: int) -> np.ndarray:
        ink = np.zeros((100, 100), np.float32)
        ink[10:90, 20 : 20 + width] = 1.0
        return ink

    for width in (1, 3, 6, 10):
        assert stroke_width(line(width)) == width
    # Beside a digit's strokes, a form's thin line left over does not make them thinner.
    stroke = line(10)
    stroke[95, :] = 1.0
    assert stroke_width(stroke) == 10


def test_mnist_digits_are_hardly_ever_widened(mnist_test):
    # Their strokes are what the models know: fitted at their own size, under 1 % would be.
    images, _ = mnist_test
    thin = sum(stroke_width(img / 255.0) < THIN for img in images[:2000])
    assert thin <= 20


@pytest.mark.parametrize("digit", [0, 3, 8, 7])
@pytest.mark.parametrize("pen", [2, 3])
def test_a_digit_drawn_with_a_thin_pen_is_fitted_with_strokes_the_models_know(
    predictor, digit, pen
):
    # A 2-3 px pen on a 400 px canvas fits a tenth of a pixel wide: a faint ghost, read as 1.
    data = encode(drawn(digit, pen), "PNG")
    fitted = preprocess(data, SPEC, CAP).pixels
    assert fitted.max() > 200
    assert stroke_width(fitted / 255.0) >= 0.8 * STROKE
    a = predictor.predict([data])[0]
    assert (a.label, a.uncertain) == (digit, False)


def test_handwriting_drawn_with_a_fine_pen_reads_as_the_digit(predictor, mnist_test):
    # MNIST's handwriting thinned to its centre line, 1-5 px wide on a 300-600 px picture.
    images, labels = mnist_test
    answers = predictor.predict([synth.make("thin_pen", images[i], i) for i in range(40)])
    right = sum(a.label == labels[i] for i, a in enumerate(answers))
    flagged = sum(a.uncertain for a in answers)
    assert right >= 39 and flagged <= 1


def test_a_fine_pen_1_is_read_not_a_crash(predictor, mnist_test):
    # Taken for a form's line, this 1 left only scraps at analysis size and nothing at full
    # size, and the fit raised IndexError: a 500.
    images, labels = mnist_test
    assert labels[180] == 1
    assert predictor.predict([synth.make("thin_pen", images[180], 180)])[0].label == 1
    with pytest.raises(NoInk):
        tighten(np.zeros((20, 20), np.float32), 1.0, False)


@pytest.mark.parametrize("digit", [7, 4, 2, 5, 1])
@pytest.mark.parametrize("pen", [3, 8])
def test_a_digits_own_straight_strokes_are_not_taken_for_a_forms_lines(predictor, digit, pen):
    a = predictor.predict([encode(drawn(digit, pen), "PNG")])[0]
    assert a.preprocessing.lines_removed == 0
    assert (a.label, a.uncertain) == (digit, False)


def test_an_underline_touching_a_drawn_digit_still_goes(predictor):
    im = drawn(3, 4)
    ImageDraw.Draw(im).line([(40, 350), (360, 350)], fill=0, width=4)  # under the 3's foot
    a = predictor.predict([encode(im, "PNG")])[0]
    assert a.preprocessing.lines_removed == 1
    assert a.label == 3


def test_a_ruled_line_crossing_a_drawn_digit_still_goes(predictor):
    # One line through the digit, as a stroke of it could be, but reaching the picture's edges.
    im = drawn(3, 4)
    ImageDraw.Draw(im).line([(0, 200), (399, 200)], fill=0, width=4)
    a = predictor.predict([encode(im, "PNG")])[0]
    assert a.preprocessing.lines_removed == 1
    assert a.label == 3
