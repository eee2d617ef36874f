"""POST /predict?mode=number: the digits of a number, each read as a single digit is, on
constructed images (drawn strokes, MNIST test digits side by side, touching, in pieces)."""

import io
import json
import subprocess
import sys

import jsonschema
import numpy as np
import pytest
from PIL import Image, ImageDraw

from bench import numbers
from server import components, create_app
from server.config import ServerConfig
from server.segment import MAX_DIGITS
from tests.conftest import ROOT
from tests.uploads import png


@pytest.fixture(scope="module")
def app(bundle):
    return create_app(ServerConfig(artifacts=bundle, max_batch=8))


@pytest.fixture
def client(app):
    return app.test_client()


def read(client, data: bytes, query: str = "mode=number", ctype: str = "image/png"):
    return client.post(f"/predict?{query}", data=data, content_type=ctype)


def side_by_side(digits: list[np.ndarray], gap: int = 6, margin: int = 8) -> np.ndarray:
    """MNIST digits (ink high) cut to their ink columns, `gap` pixels apart, on black."""
    cut = []
    for d in digits:
        cols = np.flatnonzero(d.any(0))
        cut.append(d[:, cols[0] : cols[-1] + 1])
    width = sum(c.shape[1] for c in cut) + gap * (len(cut) - 1) + 2 * margin
    out = np.zeros((28 + 2 * margin, width), dtype=np.uint8)
    x = margin
    for c in cut:
        out[margin : margin + 28, x : x + c.shape[1]] = c
        x += c.shape[1] + gap
    return out


def pieces(img: np.ndarray) -> int:
    return len(components.label(img > 60))


@pytest.fixture(scope="module")
def mnist(mnist_test):
    images, labels = mnist_test
    return images, labels


def first_of(labels: np.ndarray, digit: int, skip: int = 0) -> int:
    return int(np.flatnonzero(labels == digit)[skip])


def drawn(size=(360, 180)) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    im = Image.new("L", size, 255)
    return im, ImageDraw.Draw(im)


def encode(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def test_twelve_drawn_as_strokes_reads_12(client):
    im, d = drawn()
    d.line([(80, 40), (100, 28), (100, 150)], fill=0, width=12)  # 1
    d.arc([170, 25, 270, 105], 200, 20, fill=0, width=12)  # 2: the top's curve
    d.line([(262, 80), (180, 150), (280, 150)], fill=0, width=12, joint="curve")
    r = read(client, encode(im))
    assert r.status_code == 200, r.get_json()
    a = r.get_json()
    assert a["number"] == "12", a
    assert [d["label"] for d in a["digits"]] == [1, 2]
    # The boxes are the strokes', in the upload's pixels, left to right.
    one, two = (d["box"] for d in a["digits"])
    assert 65 <= one[0] <= 80 and 100 <= one[2] <= 115 and one[1] <= 30 and one[3] >= 150
    assert 160 <= two[0] <= 180 and 275 <= two[2] <= 290


def test_three_mnist_digits_side_by_side_read_exactly(client, mnist):
    images, labels = mnist
    img = side_by_side([images[0], images[1], images[2]])  # MNIST's first test digits: 7 2 1
    assert pieces(img) == 3
    a = read(client, png(img)).get_json()
    assert a["number"] == "".join(str(labels[i]) for i in range(3)) == "721"
    assert not a["uncertain"]
    for d in a["digits"]:
        assert d["agreement"] == 3 and sum(d["votes"]) == 3 and len(d["models"]) == 3
        assert d["uncertain_reasons"] == []
    # The one digit request reads each the same: the same fit, the same models.
    for i, d in enumerate(a["digits"]):
        single = read(client, png(images[i]), query="").get_json()
        assert single["label"] == d["label"]


def touching_pair(left: np.ndarray, right: np.ndarray, further: int = 0) -> np.ndarray:
    """Two MNIST digits, the right one moved left until its strokes meet the left one's, then
    `further` pixels on, into the left one."""
    img = side_by_side([left, right], gap=8)
    split = 8 + np.flatnonzero(left.any(0))[-1] - np.flatnonzero(left.any(0))[0] + 1
    a, b = img[:, :split], img[:, split:]

    def joined(shift: int) -> np.ndarray:
        out = np.zeros_like(img)
        out[:, :split] = a
        out[:, split - shift : img.shape[1] - shift] = np.maximum(
            out[:, split - shift : img.shape[1] - shift], b
        )
        return out

    for shift in range(1, split):
        if pieces(joined(shift)) == 1:
            return joined(shift + further)
    raise AssertionError("the digits never touched")


def read_pairs(client, mnist, pairs) -> list[str]:
    """The number read in each touching pair (left, right, which of their kind in MNIST's test
    set, and optionally how many pixels the right one is written into the left one past
    touching), every pair one piece of ink."""
    images, labels = mnist
    got = []
    for left, right, skip, *further in pairs:
        img = touching_pair(
            images[first_of(labels, left, skip)], images[first_of(labels, right, skip)], *further
        )
        assert pieces(img) == 1
        got.append(read(client, png(img)).get_json()["number"])
    return got


def test_two_touching_digits_are_split(client, mnist):
    images, labels = mnist
    got = []
    for left, right in ((0, 3), (5, 8), (3, 0), (2, 7)):
        img = touching_pair(images[first_of(labels, left)], images[first_of(labels, right)])
        assert pieces(img) == 1  # one piece of ink: only a cut tells the digits apart
        a = read(client, png(img)).get_json()
        got.append(a["number"])
        assert a["preprocessing"]["cuts"] == 1
    assert got == ["03", "58", "30", "27"]


def test_touching_digits_the_models_read_whole_are_split_when_the_parts_read_likelier(
    client, mnist
):
    # Each pair read whole as one digit (17 as 7, 59 as 9) or cut in the wrong place by the
    # rules for clean cuts alone; the parts are likelier digits than the whole, by a margin.
    pairs = ((1, 7, 2), (1, 9, 2), (5, 9, 0), (9, 3, 0), (3, 7, 0), (5, 0, 0))
    assert read_pairs(client, mnist, pairs) == [f"{a}{b}" for a, b, _ in pairs]


def test_touching_digits_are_cut_where_the_parts_read_likeliest(client, mnist):
    # Each pair was cut where the rules found their cleanest cut, or where a part still as wide
    # as a pair counted as a sure digit, and read as three digits or as the wrong two (50 as
    # 583, 30 as 3117, 54 as 514, 88 as 853, 02 as 62, 69 as 19).
    pairs = ((5, 0, 3), (3, 0, 13), (5, 4, 17), (8, 8, 21), (0, 2, 20), (6, 9, 11))
    assert read_pairs(client, mnist, pairs) == [f"{a}{b}" for a, b, _ in pairs]


def test_touching_digits_are_cut_right_once_the_whole_digit_check_weighs_the_parts(client, mnist):
    # Without the check's say in the weighing, each was read wrong: touching (53 as 633, 54
    # as 4, 64 as 154, 66 as 156, 68 as 628, 88 as 838) or written 2 px into each other (02
    # as 2, 32 as 2, 81 as 8, 99 as 08, 69 as 159, 09 as 64, 06 as 66, 58 as 63).
    touching = [(5, 3), (5, 4), (6, 4), (6, 6), (6, 8), (8, 8)]
    into = [(0, 2), (3, 2), (8, 1), (9, 9), (6, 9), (0, 9), (0, 6), (5, 8)]
    pairs = [(a, b, 0, 0) for a, b in touching] + [(a, b, 0, 2) for a, b in into]
    assert read_pairs(client, mnist, pairs) == [f"{a}{b}" for a, b, _, _ in pairs]


def test_digits_overlapping_past_any_cut_are_read_as_one_and_flagged_not_one_digit(client, mnist):
    # 10 and 11 written into each other: every cut leaves each part a slice of the other, so
    # one digit is read, which the models read with no doubt strong enough to flag; the
    # bundle's whole-digit check says it is not one whole digit.
    images, labels = mnist
    for left, right in ((1, 0), (1, 1)):
        img = touching_pair(images[first_of(labels, left)], images[first_of(labels, right)], 2)
        a = read(client, png(img)).get_json()
        assert len(a["digits"]) == 1, a["number"]
        assert "not_one_digit" in a["digits"][0]["uncertain_reasons"], a["digits"][0]
        assert a["digits"][0]["uncertain"] and a["uncertain"]


def test_whole_digits_are_seldom_flagged_not_one_digit(client, mnist):
    # Export sets the check's threshold where 1 % of whole validation digits fall: of the first
    # ten test digits of each kind, sent alone, one or two at most.
    images, labels = mnist
    flagged = 0
    for d in range(10):
        for k in range(10):
            a = read(client, png(images[first_of(labels, d, k)])).get_json()
            flagged += any("not_one_digit" in x["uncertain_reasons"] for x in a["digits"])
    assert flagged <= 2


def test_a_1_leaning_on_a_digit_is_cut_straight_where_the_paths_of_least_ink_miss_it(client, mnist):
    # Each pair read whole as its other digit or cut through it (10 as 17) along a path that
    # follows the ink's valleys; a straight cut, read once the whole reads unsure, parts them.
    pairs = ((1, 0, 5), (1, 4, 3), (1, 6, 2), (4, 1, 2))
    assert read_pairs(client, mnist, pairs) == ["10", "14", "16", "41"]


def test_a_1_touching_a_digit_through_no_clean_cut_is_cut_off_when_the_whole_reads_unsure(
    client, mnist
):
    # Each pair is narrower than two digits and no cut through it is clean (the 1 leans on its
    # neighbour over many rows): read whole, unsure, as one digit (11 as 4, 91 as 9, 01 as 0).
    pairs = ((1, 1, 11), (9, 1, 17), (0, 1, 29), (1, 9, 19), (6, 1, 15), (8, 1, 23))
    assert read_pairs(client, mnist, pairs) == [f"{a}{b}" for a, b, _ in pairs]


def test_two_1s_touching_are_cut_apart_though_narrower_than_a_pair(client, mnist):
    # Two 1s side by side are as narrow as one wide digit: read whole, unsure, as one 1 (61
    # as 4), until the cuts of such a narrow group are read when the models are unsure of it.
    pairs = ((1, 1, 2, 2), (1, 1, 3, 0), (1, 1, 5, 0), (6, 1, 3, 4))
    assert read_pairs(client, mnist, pairs) == ["11", "11", "11", "61"]


def test_a_1_written_into_a_digit_is_cut_off_when_the_check_doubts_the_whole(client, mnist):
    # Read whole as the other digit and surely (16 as 6, 71 as 7, 91 as 9), so its loose cuts
    # went unread; the whole-digit check scores each under its threshold, and they are read.
    pairs = ((1, 6, 0, 2), (1, 6, 1, 2), (7, 1, 5, 4), (9, 1, 5, 2))
    assert read_pairs(client, mnist, pairs) == ["16", "16", "71", "91"]


def test_a_straight_1_as_tall_as_the_digits_is_read_not_taken_for_a_forms_line(client):
    # A 1 drawn as one upright stroke, in a number that fills most of a wide picture's
    # height: as long as a form's upright line would be there, but no taller than the
    # number's other digits, and with no line across the picture.
    im, d = drawn((420, 150))
    d.line([(40, 40), (110, 40), (70, 128)], fill=0, width=11)  # 7
    d.line([(180, 20), (180, 130)], fill=0, width=11)  # 1
    d.line([(290, 20), (250, 95), (330, 95)], fill=0, width=11)  # 4
    d.line([(310, 60), (310, 130)], fill=0, width=11)
    a = read(client, encode(im)).get_json()
    assert a["number"] == "714"
    assert a["preprocessing"]["lines_removed"] == 0


@pytest.mark.parametrize("gap, width", [(40, 60), (50, 80)])
def test_a_0_open_at_the_bottom_is_not_cut_into_1_and_7(client, gap, width):
    """Cut through its top, such a 0 leaves two clean parts the models read surely as 1 and 7;
    the whole-digit check vouches for it whole, so only the readings may cut it (read 171
    before)."""
    im, d = drawn()
    d.arc([60, 30, 60 + width, 150], 90 + gap, 450 - gap, fill=0, width=10)
    d.line([(230, 30), (230, 150)], fill=0, width=10)
    a = read(client, encode(im)).get_json()
    assert a["number"] == "01", a


def test_a_digit_drawn_in_two_strokes_stays_one_digit(client):
    im, d = drawn((300, 200))
    # A 7 whose bar was drawn apart from its stem, a 4 whose corner stops short of its stem.
    d.line([(40, 40), (120, 40)], fill=0, width=10)
    d.line([(120, 58), (80, 170)], fill=0, width=10)
    d.line([(200, 30), (170, 110), (230, 110)], fill=0, width=10)
    d.line([(250, 40), (250, 170)], fill=0, width=10)
    grey = 255 - np.asarray(im)
    assert pieces(grey) == 4
    a = read(client, encode(im)).get_json()
    assert a["number"] == "74", a
    assert [d["shape"]["pieces"] for d in a["digits"]] == [2, 2]


def five_with_its_flag_apart(size, drop: int, flag) -> Image.Image:
    """A 5 drawn as its stem and bowl (moved down by `drop` px) and, apart, its flag."""
    im, d = drawn(size)
    d.line([(70, 40 + drop), (65, 95 + drop)], fill=0, width=10)
    d.arc([55, 75 + drop, 135, 165 + drop], 210, 150, fill=0, width=10)
    d.line(flag, fill=0, width=10)
    assert pieces(255 - np.asarray(im)) == 2
    return im


def test_a_fives_flag_drawn_apart_stays_with_it(client):
    im = five_with_its_flag_apart((200, 200), 0, [(80, 30), (140, 30)])
    a = read(client, encode(im)).get_json()
    assert a["number"] == "5", a


def test_a_fives_flag_drawn_well_above_and_beside_its_body_stays_with_it(client):
    # The flag ends past the body's right edge, over a third of the digit's height above it.
    im = five_with_its_flag_apart((240, 220), 25, [(120, 15), (185, 15)])
    a = read(client, encode(im)).get_json()
    assert a["number"] == "5", a
    assert a["digits"][0]["shape"]["pieces"] == 2


def test_a_speck_of_noise_is_dropped(client, mnist):
    images, _ = mnist
    img = side_by_side([images[0], images[1]], margin=14)
    clean = read(client, png(img)).get_json()
    img[3:5, img.shape[1] // 2 : img.shape[1] // 2 + 2] = 255  # a dot above the gap
    img[-4:-2, 3:5] = 255  # and one in the corner
    a = read(client, png(img)).get_json()
    assert a["number"] == clean["number"] == "72"
    assert (
        a["preprocessing"]["components_dropped"] == clean["preprocessing"]["components_dropped"] + 2
    )
    assert [d["box"] for d in a["digits"]] == [d["box"] for d in clean["digits"]]


def test_a_single_digit_in_number_mode_reads_as_itself(client, mnist):
    images, _ = mnist
    uploads = [png(images[i]) for i in range(30)]
    # Every example of one digit (examples/number-*.png hold numbers).
    singles = [p for p in sorted((ROOT / "examples").glob("*-*.*")) if p.stem[:7] != "number-"]
    uploads += [p.read_bytes() for p in singles]
    for i, data in enumerate(uploads):
        single = read(client, data, query="").get_json()
        number = read(client, data).get_json()
        assert number["number"] == str(single["label"]), i
        (d,) = number["digits"]
        assert d["label"] == single["label"] and d["votes"] == single["votes"]
        assert d["confidence"] == pytest.approx(single["confidence"], abs=0.05)
    photo = (ROOT / "examples" / "photo-5.jpg").read_bytes()
    a = read(client, photo, ctype="image/jpeg").get_json()
    assert a["number"] == "5" and a["preprocessing"]["inverted"]


def test_more_than_32_digits_is_a_422(client, mnist):
    images, _ = mnist
    row = side_by_side([images[i] for i in range(MAX_DIGITS + 1)], gap=4)
    r = read(client, png(row))
    assert r.status_code == 422
    assert r.get_json()["code"] == "too_many_digits"
    assert str(MAX_DIGITS) in r.get_json()["error"]
    # The same digits, 32 of them, are a number.
    row = side_by_side([images[i] for i in range(MAX_DIGITS)], gap=4)
    a = read(client, png(row)).get_json()
    assert len(a["digits"]) == MAX_DIGITS


def test_a_blank_image_is_refused_as_in_digit_mode(client, mnist):
    images, _ = mnist
    blanks = [png(np.full((60, 200), 255, np.uint8)), png(np.zeros((40, 40), np.uint8))]
    files = [png(side_by_side([images[0], images[1]])), *blanks]
    data = {"image": [(io.BytesIO(b), f"{i}.png") for i, b in enumerate(files)]}
    r = client.post("/predict?mode=number", data=data, content_type="multipart/form-data")
    number, *refused = r.get_json()["results"]
    assert number["number"] == "72"
    for blank, entry in zip(blanks, refused, strict=True):
        single = read(client, blank, query="")
        alone = read(client, blank)
        assert alone.status_code == single.status_code == entry["status"] == 422
        assert alone.get_json() == single.get_json()
        assert entry == {**single.get_json(), "status": 422}


def test_without_mode_the_answer_is_unchanged_and_a_bad_mode_is_a_400(client, mnist):
    images, _ = mnist
    data = png(images[0])
    plain = read(client, data, query="").get_json()
    assert read(client, data, query="mode=digit").get_json() == plain
    assert "number" not in plain and plain["label"] == 7
    r = read(client, data, query="mode=numbers")
    assert r.status_code == 400
    assert r.get_json()["code"] == "unknown_mode" and "mode=number" in r.get_json()["error"]


def test_multipart_and_batches_in_number_mode(client, mnist):
    images, _ = mnist
    files = [png(side_by_side([images[0], images[1]])), b"not an image", png(images[2])]
    data = {"image": [(io.BytesIO(b), f"{i}.png") for i, b in enumerate(files)]}
    r = client.post("/predict?mode=number", data=data, content_type="multipart/form-data")
    results = r.get_json()["results"]
    assert [x.get("number", x.get("code")) for x in results] == ["72", "unsupported_format", "1"]
    one = {"image": (io.BytesIO(files[0]), "n.png")}
    r = client.post("/predict?mode=number", data=one, content_type="multipart/form-data")
    assert r.get_json()["number"] == "72"


def test_include_image_gives_each_digit_the_28x28_the_models_saw(client, mnist):
    images, _ = mnist
    a = read(client, png(side_by_side(images[:4])), "mode=number&include_image=1").get_json()
    assert len(a["digits"]) == 4
    for d, digit in zip(a["digits"], images[:4], strict=True):
        head, b64 = d["image"].split(",", 1)
        assert head == "data:image/png;base64"
        im = Image.open(io.BytesIO(__import__("base64").b64decode(b64)))
        # Each digit's own fit, not a size alone: these MNIST digits come back pixel for pixel.
        assert im.size == (28, 28) and np.array_equal(np.asarray(im), digit)


def test_boxes_are_in_the_uploads_pixels(client, mnist):
    images, _ = mnist
    img = side_by_side([images[0], images[1]], gap=10, margin=10)
    small = read(client, png(img)).get_json()
    big = Image.fromarray(img).resize((img.shape[1] * 20, img.shape[0] * 20))
    a = read(client, encode(big)).get_json()
    assert a["number"] == small["number"] == "72"
    for d, s in zip(a["digits"], small["digits"], strict=True):
        # The 20x upscale's boxes are the small image's, 20 times larger (to a few pixels).
        assert np.allclose(d["box"], np.array(s["box"]) * 20, atol=25), (d["box"], s["box"])
    assert a["preprocessing"]["source_size"] == [img.shape[1] * 20, img.shape[0] * 20]


@pytest.mark.parametrize(
    "fmt, width, scale, firsts",
    [
        # At working size these digits are 8 pixels tall: read there, 6657074 and 423514; the
        # JPEG decodes reduced (draft mode), its digits 10 pixels tall, and is decoded again.
        ("PNG", 1600, 2, (21, 42)),
        ("JPEG", 1600, 2, (21, 42)),
        # The number's region is smaller than working size, yet finer than the first look
        # (there: 6651074, 271217).
        ("PNG", 800, 1, (21, 35)),
    ],
)
def test_a_small_number_on_a_large_page_is_read_from_the_uploads_own_pixels(
    client, mnist, fmt, width, scale, firsts
):
    """Digits under ZOOM_HEIGHT at working size are looked at again on the upload's pixels
    around them; their boxes are in the upload's pixels."""
    images, labels = mnist
    for first in firsts:  # MNIST's test digits 6654074, 4235124 and 2712117
        ink = side_by_side([images[i] for i in range(first, first + 7)])
        ink = np.asarray(Image.fromarray(ink).resize((ink.shape[1] * scale, ink.shape[0] * scale)))
        page = np.full((width * 2 // 3, width), 235, dtype=np.uint8)
        page -= np.linspace(0, 30, width).astype(np.uint8)[None, :]  # uneven light
        top, left = width // 3, width // 3
        region = page[top : top + ink.shape[0], left : left + ink.shape[1]]
        np.minimum(region, 255 - ink, out=region)  # dark ink on the paper
        buf = io.BytesIO()
        Image.fromarray(page).save(buf, format=fmt)
        a = read(client, buf.getvalue(), ctype=f"image/{fmt.lower()}").get_json()
        assert a["number"] == "".join(str(labels[i]) for i in range(first, first + 7))
        for d in a["digits"]:
            x0, y0, x1, y1 = d["box"]
            assert left <= x0 < x1 <= left + ink.shape[1]
            assert top <= y0 < y1 <= top + ink.shape[0]


def test_a_number_too_small_for_the_first_look_is_found_in_a_wider_look(client, mnist):
    """Digits 1.5 % of a 12-megapixel photo's side (a number on a page photographed whole) are
    5 pixels tall at working size, under the smallest digit there: looked for again at three
    times that size. A page with nothing on it stays refused."""
    images, labels = mnist
    rng = np.random.default_rng(0)
    ink = side_by_side([images[i] for i in range(3)])  # 7 2 1
    ink = np.asarray(Image.fromarray(ink).resize((ink.shape[1] * 3, ink.shape[0] * 3)))
    grain = rng.normal(0, 3, (3000, 4000))
    page = np.clip(225 - np.linspace(0, 40, 4000)[None, :] + grain, 0, 255).astype(np.uint8)
    blank = page.copy()
    top, left = 1700, 2300
    region = page[top : top + ink.shape[0], left : left + ink.shape[1]]
    np.minimum(region, 255 - ink, out=region)
    for im, number in ((page, "721"), (blank, None)):
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, format="JPEG", quality=90)
        r = read(client, buf.getvalue(), ctype="image/jpeg")
        if number is None:
            assert r.status_code == 422 and r.get_json()["code"] == "no_ink"
            continue
        a = r.get_json()
        assert a["number"] == number == "".join(str(labels[i]) for i in range(3))
        for d in a["digits"]:
            x0, y0, x1, y1 = d["box"]
            assert left <= x0 < x1 <= left + ink.shape[1]
            assert top <= y0 < y1 <= top + ink.shape[0]


def test_a_page_photos_shaded_corners_are_not_taken_for_the_number(client, mnist):
    """bench.numbers' page style: a small number in a 12-megapixel photo whose light falls off
    towards its corners and edges. That shade stays under half the strokes' ink and is not
    read as digits (these read 44, 3218 and 0, the number itself unseen)."""
    images, labels = mnist
    for k in (6, 52, 56):  # the page style's samples of the main set that showed it
        sample = numbers.sample(images, labels, numbers.PAGE, numbers.MAIN, k)
        assert read(client, sample.data, ctype="image/jpeg").get_json()["number"] == sample.truth


def test_a_number_as_small_as_the_wider_look_finds_stands_out_of_the_page(client, mnist):
    """bench.numbers' page style at the bottom of its sizes: two or three digits about 1.3 % of
    a 12-megapixel photo's side, thin and blurred. The wider look finds digits 12 pixels tall;
    at 8 their strokes, averaged with the paper, hardly stood out of its grain, and these four
    were refused as no_ink, in both modes."""
    images, labels = mnist
    for k in (32, 90, 103, 121):  # the page style's samples of the main set that showed it
        sample = numbers.sample(images, labels, numbers.PAGE, numbers.MAIN, k)
        assert read(client, sample.data, ctype="image/jpeg").get_json()["number"] == sample.truth
        r = client.post("/predict", data=sample.data, content_type="image/jpeg")
        assert r.status_code == 200, r.get_json()


def test_a_number_on_a_sticky_note_on_a_desk_is_read_on_the_note(client, mnist):
    """The desk around the note is most of the photo: the first look takes the note, lighter,
    for the ink. As for one digit, the note is looked at alone, with dark ink, and the
    digits' boxes are in the upload's pixels, on the note."""
    images, labels = mnist
    ink = side_by_side([images[i] for i in (3, 2, 1)], gap=8)
    ink = Image.fromarray(ink).resize((ink.shape[1] * 6, ink.shape[0] * 6), Image.BICUBIC)
    note = Image.new("RGB", (ink.width + 120, ink.height + 120), (250, 234, 120))
    note.paste((30, 30, 90), (60, 60), ink)  # blue pen
    turned = note.rotate(8, resample=Image.BICUBIC, expand=True)
    mask = Image.new("L", note.size, 255).rotate(8, resample=Image.BICUBIC, expand=True)
    photo = Image.new("RGB", (1200, 900), (96, 66, 44))  # a wooden desk
    at = (300, 200)
    photo.paste(turned, at, mask)
    buf = io.BytesIO()
    photo.save(buf, format="JPEG", quality=90)
    a = read(client, buf.getvalue(), ctype="image/jpeg").get_json()
    assert a["number"] == "".join(str(labels[i]) for i in (3, 2, 1))  # 014
    for d in a["digits"]:
        x0, y0, x1, y1 = d["box"]
        assert at[0] < x0 < x1 < at[0] + turned.width and at[1] < y0 < y1 < at[1] + turned.height


def test_a_number_on_squared_paper_is_read(client, mnist):
    """Graph paper: grey lines every 10 pixels, finer than a line's thickest run (3 % of the
    look's side). Each line must be found though the rows beside it lie on the next ones;
    with half of them missed the grid joined the digits into one mark (11 of these 20 read
    exactly)."""
    images, labels = mnist
    right = 0
    for k in range(20):
        idx = np.random.default_rng(k).choice(len(images), 4, replace=False)
        ink = side_by_side([images[i] for i in idx], gap=4)
        ink = Image.fromarray(ink).resize((ink.shape[1] * 3, ink.shape[0] * 3), Image.BICUBIC)
        ink = np.asarray(ink, dtype=np.float32) / 255
        paper = np.full(ink.shape, 245.0)
        paper[2::10] = 110
        paper[:, 4::10] = 110
        page = (paper * (1 - ink) + 20 * ink).astype(np.uint8)
        a = read(client, png(page)).get_json()
        right += a.get("number") == "".join(str(labels[i]) for i in idx)
    assert right >= 18


def test_numbers_written_on_forms_are_read(client, mnist):
    """bench.numbers' forms: in a row of boxes, on a comb, on ruled or squared paper,
    underlined; the lines are taken out and each digit read."""
    images, labels = mnist
    made = [numbers.sample(images, labels, numbers.FORMS, numbers.MAIN, k) for k in range(12)]
    forms = [set(s.kinds) & set(numbers.FORM_KINDS) for s in made]
    assert all(len(f) == 1 for f in forms) and len(set.union(*forms)) >= 4
    right = sum(
        read(client, s.data, ctype=s.media_type).get_json().get("number") == s.truth for s in made
    )
    assert right >= 11


def test_the_openapi_document_describes_the_mode(client, mnist):
    images, _ = mnist
    doc = client.get("/openapi.json").get_json()
    op = doc["paths"]["/predict"]["post"]
    (mode,) = [p for p in op["parameters"] if p["name"] == "mode"]
    assert mode["schema"]["enum"] == ["digit", "number"]
    assert "too_many_digits" in op["responses"]["422"]["description"]
    assert "unknown_mode" in op["responses"]["400"]["description"]
    schema = {
        "components": doc["components"],
        **op["responses"]["200"]["content"]["application/json"]["schema"],
    }
    validator = jsonschema.Draft202012Validator(schema)
    data = png(side_by_side(images[:3]))
    for query in ("mode=number", "mode=number&include_image=1"):
        a = read(client, data, query).get_json()
        validator.validate(a)
        number = {"components": doc["components"], "$ref": "#/components/schemas/NumberReading"}
        jsonschema.Draft202012Validator(number).validate(a)
    files = {"image": [(io.BytesIO(data), "a.png"), (io.BytesIO(b"x"), "b.png")]}
    batch = client.post("/predict?mode=number", data=files, content_type="multipart/form-data")
    validator.validate(batch.get_json())
    digits = doc["components"]["schemas"]["NumberReading"]["properties"]["digits"]
    assert digits["maxItems"] == MAX_DIGITS


def test_the_offline_command_reads_numbers_as_predict_does(client, mnist, tmp_path):
    images, _ = mnist
    path = tmp_path / "n.png"
    path.write_bytes(png(side_by_side(images[:3])))
    out = subprocess.run(
        [sys.executable, "-m", "server.predict", "--mode", "number", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == read(client, path.read_bytes()).get_json()
