"""Long straight lines (a form's box, comb, ruling, grid, underline) found in binary images."""

import numpy as np
from PIL import Image, ImageDraw

from server import lines


def test_ruled_lines_are_found_and_a_crossing_stroke_is_kept():
    binary = np.zeros((120, 160), bool)
    for y in (30, 60, 90):
        binary[y : y + 2] = True  # ruled lines, two pixels thick, across the page
    binary[20:100, 70:76] = True  # a stroke crossing all three
    found = lines.find(binary)
    assert found is not None and found.count == 3
    assert not found.mask[:, 70:76].any()  # the stroke stays whole where it crosses
    assert found.mask[30:32, :70].all() and found.mask[90:92, 76:].all()
    assert not (found.mask & ~binary).any()


def test_a_grid_is_removed_crossings_included():
    binary = np.zeros((100, 100), bool)
    for k in range(5, 100, 20):
        binary[k] = True
        binary[:, k] = True
    found = lines.find(binary)
    assert found is not None and found.count == 10
    assert np.array_equal(found.mask, binary)


def test_squared_paper_is_found_line_by_line_whatever_the_size_of_its_squares():
    # Squares of 5 to 15 pixels on a 320-pixel side: some as fine as the thickest run that
    # counts as a line, where the rows a line stands out of lie on the next line.
    for pitch in range(5, 16):
        binary = np.zeros((150, 320), bool)
        binary[3::pitch] = True
        binary[:, 5::pitch] = True
        found = lines.find(binary)
        assert found is not None
        assert found.count == len(range(3, 150, pitch)) + len(range(5, 320, pitch)), pitch
        assert np.array_equal(found.mask, binary), pitch


def test_a_box_whose_side_touches_a_stroke_keeps_the_stroke():
    binary = np.zeros((100, 80), bool)
    binary[5:7, 5:75] = binary[93:95, 5:75] = True  # top and bottom
    binary[5:95, 5:7] = binary[5:95, 73:75] = True  # left and right
    binary[20:80, 60:73] = True  # a fat stroke against the right side
    found = lines.find(binary)
    assert found is not None and found.count == 4
    assert not found.mask[20:80, 60:73].any()
    assert found.mask[5:7, 5:75].all() and found.mask[30:70, 5:7].all()


def test_thick_strokes_and_mnist_digits_are_not_lines(mnist_test):
    bar = np.zeros((128, 128), bool)
    bar[40:52, 5:123] = True  # a digit's bar as a canvas draws it: long but thick
    assert lines.find(bar) is None
    images, _ = mnist_test
    for img in images[:200]:
        big = np.asarray(Image.fromarray(img).resize((128, 128), Image.Resampling.BICUBIC))
        assert lines.find(big > 100) is None
        assert lines.find(img > 100) is None


def test_a_short_strip_holds_no_vertical_line():
    # A comb field is wide and short: a digit's stem spans most of its height.
    binary = np.zeros((40, 200), bool)
    binary[34:36] = True  # the baseline
    binary[4:36, 100:103] = True  # a 1 standing on it
    found = lines.find(binary)
    assert found is not None and found.count == 1
    assert not found.mask[4:34, 100:103].any()


def _drawn(size: tuple[int, int], segments: list, width: int) -> np.ndarray:
    im = Image.new("L", size, 0)
    draw = ImageDraw.Draw(im)
    for a, b in segments:
        draw.line([a, b], fill=255, width=width)
    return np.asarray(im) > 0


def test_ruled_lines_a_few_degrees_off_level_are_found_and_a_crossing_stroke_is_kept():
    # A ruled page photographed askew: each line drops 8 pixels over 160, about 3 degrees.
    binary = _drawn((160, 120), [((0, y - 4), (159, y + 4)) for y in (30, 60, 90)], 2)
    binary[15:106, 70:76] = True  # a stroke crossing all three
    found = lines.find(binary)
    assert found is not None and found.count == 3
    assert not found.mask[:, 70:76].any()  # the stroke stays whole where it crosses
    line_pixels = binary.copy()
    line_pixels[:, 70:76] = False
    assert found.mask.sum() >= 0.97 * line_pixels.sum()


def test_a_box_turned_four_degrees_is_removed_and_the_digit_kept():
    corners = [(30, 20), (175, 30), (165, 180), (20, 170)]
    box = _drawn((200, 200), list(zip(corners, corners[1:] + corners[:1], strict=True)), 3)
    stroke = _drawn((200, 200), [((95, 50), (105, 150))], 6)  # a 1, slanted like the page
    found = lines.find(box | stroke)
    assert found is not None and found.count == 4
    assert not (found.mask & stroke).any()
    assert found.mask.sum() >= 0.97 * box.sum()


def test_the_shortcut_for_images_that_cannot_hold_a_line_changes_no_answer(monkeypatch):
    # Strokes of many widths with level and tilted lines of many lengths and thicknesses, some
    # just long enough, and thick bands along an edge: what lines.find answers with its
    # shortcut, it answers without.
    rng = np.random.default_rng(7)
    images = []
    for _ in range(300):
        w, h = (int(v) for v in rng.integers(60, 220, 2))
        im = Image.new("1", (w, h), 0)
        d = ImageDraw.Draw(im)
        for _ in range(int(rng.integers(1, 6))):  # strokes
            pts = [tuple(int(v) for v in rng.integers(0, (w, h))) for _ in range(3)]
            d.line(pts, fill=1, width=int(rng.integers(1, 12)))
        for _ in range(int(rng.integers(0, 3))):  # lines, level or a few degrees off
            y = float(rng.uniform(0, h))
            length = float(rng.uniform(0.3, 1.0)) * w
            x0 = float(rng.uniform(0, w - length))
            slope = np.tan(np.radians(rng.uniform(-6, 6)))
            d.line(
                [(x0, y), (x0 + length, y + slope * length)], fill=1, width=int(rng.integers(1, 4))
            )
        if rng.random() < 0.3:  # a thick band along the top or bottom edge, cut by a shear
            y = 0 if rng.random() < 0.5 else h - int(rng.integers(4, 12))
            x0 = int(rng.integers(0, w // 2))
            d.rectangle([x0, y, x0 + int(rng.uniform(0.4, 1.0) * w), y + 12], fill=1)
        binary = np.asarray(im, dtype=bool)
        images.append(binary if rng.random() < 0.5 else np.ascontiguousarray(binary.T))
    with_shortcut = [lines.find(b) for b in images]
    monkeypatch.setattr(lines, "_could_hold", lambda *a: True)
    without = [lines.find(b) for b in images]
    found = 0
    for a, b in zip(with_shortcut, without, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            found += 1
            assert np.array_equal(a.mask, b.mask) and (a.count, a.thickness) == (
                b.count,
                b.thickness,
            )
    assert 60 <= found <= 240  # both kinds of image were made: with lines and without
