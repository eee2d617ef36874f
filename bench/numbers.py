"""How well POST /predict?mode=number reads numbers, and what a digit costs in that mode.

    python -m bench.numbers [--artifacts artifacts] [--per-style 300] [--seed 0]
                            [--out bench/results] [--samples DIR]

Numbers of 2 to 6 MNIST test digits side by side, with random gaps (some digits touching),
baseline drift and slanted lines, in two styles: `photo` (ink on tinted paper, uneven light,
camera noise and blur, JPEG) and `canvas` (thick strokes, white on black or black on white,
PNG). `--styles` adds, or measures alone, two more: `page`, a small number on a page
photographed whole (digits 50-130 px in a 12-megapixel JPEG with the light, grain and blur of
bench/synth.py's small_in_photo), and `forms`, a number written in a form's row of boxes or
on its comb, on ruled or squared paper, or underlined (lines black, grey or a form's light
colour on evenly lit paper with a little noise, PNG or JPEG, as bench/synth.py's forms). Each
is sent over HTTP to a `python -m server` started on 127.0.0.1, and scored: the share of
numbers read exactly, per style and per kind (plain, touching, drift, slant; the form), the
share of digits read right, and the share of numbers flagged uncertain.

Two sets of statistics, each seeded: `main`, and `other`, with different gaps, more and deeper
touching, more drift and slant, digits of uneven size each leaning its own way, drawn from
other seeds: tuning on one and checking on the other tells a sound segmentation from one fitted
to the generator.

Cost: the same server answers single-digit images of each style (one digit of each number,
made the same way), interleaved with the numbers; the ratio is a number's milliseconds per
digit against a single-digit request's milliseconds. Writes numbers.md and numbers.json.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests
from PIL import Image, ImageFilter

from bench import synth
from training.data import load_split, resolve_data_dir

ROOT = Path(__file__).resolve().parent.parent
STYLES = ("photo", "canvas")  # the default report
PAGE = "page"  # a small number in a large photo: --styles
FORMS = "forms"  # a number written on a form or on lined paper: --styles
FORM_KINDS = ("boxes", "comb", "ruled", "squared", "underlined")
SINGLES = 1000  # single digits of each default style read alone


@dataclass(frozen=True)
class Stats:
    """How numbers are laid out: gaps and touching, drift, slant, size."""

    name: str
    gap: tuple[float, float]  # gap between digits, of the digit height, when they do not touch
    touch: float  # chance that a digit touches the one before it
    overlap: tuple[float, float]  # how far touching digits reach into each other, of the height
    drift: float  # baseline drift per digit, of the height (standard deviation)
    slanted: float  # chance that the line is slanted
    slant: float  # the largest slant, degrees
    size_spread: float  # digit heights vary by this share around the number's
    lean: float  # each digit leans by up to this many degrees
    seed: int  # added to every generator's seed


# "Some touching": a tenth of neighbours touch in `main` (a quarter of its numbers hold a
# touching pair), a fifth, deeper, in `other`; the results also count touching numbers apart.
MAIN = Stats("main", (0.05, 0.45), 0.1, (0.0, 0.04), 0.04, 0.3, 7, 0.0, 0.0, 0)
OTHER = Stats("other", (0.02, 0.7), 0.2, (0.0, 0.08), 0.07, 0.4, 10, 0.12, 6, 1_000_003)


@dataclass(frozen=True)
class Sample:
    data: bytes
    media_type: str
    truth: str
    kinds: tuple[str, ...]  # touching, drift, slant; plain when none


def _digit_ink(digit: np.ndarray, height: int, thicken: int, lean: float) -> np.ndarray:
    """The MNIST digit as a smooth ink mask whose 20 px box is `height` tall, cut to its ink."""
    mask = synth._shape(digit, round(height * 28 / 20), thicken)
    if lean:
        mask = synth._rotate(mask, lean)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _line(
    digits: list[np.ndarray], height: int, thicken: int, stats: Stats, rng: np.random.Generator
) -> tuple[np.ndarray, tuple[str, ...]]:
    """The digits side by side as one ink mask, and the kinds of layout it has."""
    kinds = set()
    masks = []
    for d in digits:
        h = round(height * (1 + rng.uniform(-stats.size_spread, stats.size_spread)))
        lean = rng.uniform(-stats.lean, stats.lean) if stats.lean else 0.0
        masks.append(_digit_ink(d, h, thicken, lean))
    pad = height
    width = sum(m.shape[1] for m in masks) + 2 * pad + len(masks) * height
    canvas_h = 3 * height
    ink = np.zeros((canvas_h, width), dtype=np.float32)
    x = pad
    base = 2 * height  # the baseline; digits sit on it, their bottoms at it
    for i, m in enumerate(masks):
        if stats.drift:
            base += round(rng.normal(0, stats.drift) * height)
            base = int(np.clip(base, m.shape[0] + 2, canvas_h - 2))
        if abs(base - 2 * height) > 0.06 * height:
            kinds.add("drift")
        top = base - m.shape[0]
        h, w = m.shape
        if i and rng.random() < stats.touch:
            # Touching: the digit moved left until its strokes meet the previous ink, and
            # further by the overlap, row by row (boxes overlapping is not enough).
            rows = range(h)
            reach = [
                int(np.flatnonzero(ink[top + r] > 0.3)[-1]) - int(np.flatnonzero(m[r] > 0.3)[0])
                for r in rows
                if (ink[top + r] > 0.3).any() and (m[r] > 0.3).any()
            ]
            if reach:
                x = max(reach) - round(rng.uniform(*stats.overlap) * height)
                kinds.add("touching")
        elif i:
            x += round(rng.uniform(*stats.gap) * height)
        ink[top : top + h, x : x + w] = np.maximum(ink[top : top + h, x : x + w], m)
        x += w
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    ink = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    if rng.random() < stats.slanted:
        angle = rng.uniform(-stats.slant, stats.slant)
        ink = synth._rotate(ink, angle)
        if abs(angle) > 2:
            kinds.add("slant")
    return ink, tuple(sorted(kinds)) or ("plain",)


def _photo(ink: np.ndarray, rng: np.random.Generator) -> bytes:
    """Ink on tinted paper in a phone photo: uneven light, noise, blur, JPEG."""
    ih, iw = ink.shape
    fill = rng.uniform(0.5, 0.9)  # the number's share of the frame's width
    m = round(0.2 * ih)  # paper all round: a number cut by the frame is another problem
    w = max(round(iw / fill), iw + 2 * m)
    h = max(round(w * rng.uniform(0.35, 0.75)), ih + 2 * m)
    top, left = int(rng.integers(m, h - ih - m + 1)), int(rng.integers(m, w - iw - m + 1))
    full = synth._paste(np.zeros((h, w)), ink, top, left)
    paper = np.array([rng.uniform(0.85, 0.97), rng.uniform(0.83, 0.95), rng.uniform(0.75, 0.9)])
    pen = np.array([rng.uniform(0.05, 0.2), rng.uniform(0.05, 0.2), rng.uniform(0.1, 0.45)])
    rgb = paper * (1 - full[..., None]) + pen * full[..., None]
    rgb = rgb * synth._lighting(h, w, rng)[..., None] + rng.normal(0, 0.025, (h, w, 3))
    im = Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8), "RGB")
    im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    return synth._encode(im, "JPEG", quality=int(rng.integers(70, 92)))


def _page(ink: np.ndarray, rng: np.random.Generator) -> bytes:
    """The number small on a page photographed whole: a 12-megapixel JPEG, its light and grain
    made at a quarter of the size and enlarged, as bench/synth.py's small_in_photo."""
    h, w = (3000, 4000) if rng.random() < 0.7 else (4000, 3000)
    ih, iw = ink.shape
    top, left = int(rng.integers(100, h - ih - 100)), int(rng.integers(100, w - iw - 100))
    quarter = synth._lighting(h // 4, w // 4, rng) * rng.uniform(0.8, 0.95)
    quarter = quarter + rng.normal(0, 0.012, quarter.shape)
    grey = np.asarray(
        Image.fromarray(quarter.astype(np.float32), "F").resize((w, h), Image.Resampling.BILINEAR)
    ).copy()
    patch = grey[top : top + ih, left : left + iw]
    patch[:] = patch * (1 - ink) + rng.uniform(0.05, 0.3) * ink
    im = Image.fromarray((np.clip(grey, 0, 1) * 255).astype(np.uint8), "L")
    im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.2)))
    return synth._encode(im.convert("RGB"), "JPEG", quality=int(rng.integers(75, 92)))


def _canvas(ink: np.ndarray, rng: np.random.Generator) -> bytes:
    """A drawing on a web canvas: white on black or black on white, a margin around it, PNG."""
    ih = ink.shape[0]
    margin = round(ih * rng.uniform(0.1, 0.6))
    full = np.pad(ink, margin)
    grey = full if rng.random() < 0.5 else 1.0 - full
    return synth._encode(Image.fromarray((grey * 255).astype(np.uint8), "L"), "PNG")


def _in_cells(
    digits: list[np.ndarray], height: int, comb: bool, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A digit a cell, in a row of boxes or on a comb (a baseline with ticks between the
    cells), an empty cell or two after them; (ink, lines). A digit may touch its box."""
    masks = [_digit_ink(d, height, 0, 0.0) for d in digits]
    width = int(rng.integers(1, max(2, height // 30) + 1))
    cell, box = round(height * rng.uniform(0.9, 1.3)), round(height * rng.uniform(1.05, 1.35))
    n = len(masks) + int(rng.integers(0, 3))
    pad = int(rng.integers(4, height // 2 + 6))
    h, w = box + 2 * pad, n * cell + 2 * pad + width
    ink, lines = np.zeros((h, w), np.float32), np.zeros((h, w), np.float32)
    for i, m in enumerate(masks):
        mh, mw = m.shape
        x = (
            pad
            + i * cell
            + max(1, (cell - mw) // 2)
            + int(rng.integers(-cell // 10, cell // 10 + 1))
        )
        if comb:  # on the baseline, or dipping through it
            y = pad + box - mh + int(rng.integers(-height // 12 - 1, 2))
        else:
            y = pad + max(1, box - mh - int(rng.integers(1, max(2, box - mh) + 1)))
        x, y = int(np.clip(x, 0, w - mw)), int(np.clip(y, 0, h - mh))
        ink[y : y + mh, x : x + mw] = np.maximum(ink[y : y + mh, x : x + mw], m)
    if comb:
        tick = round(height * rng.uniform(0.2, 0.45))
        synth._hline(lines, pad + box, pad - width, pad + n * cell + width, width)
        for k in range(n + 1):
            synth._vline(lines, pad + k * cell, pad + box - tick, pad + box + 1, width)
    else:
        for y in (pad, pad + box):
            synth._hline(lines, y, pad - width, pad + n * cell + width, width)
        for k in range(n + 1):
            synth._vline(lines, pad + k * cell, pad - width, pad + box + width, width)
    return ink, lines


def _on_lines(
    ink: np.ndarray, height: int, form: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The number's ink on a page with ruled or squared lines, or a line under it; (ink,
    lines)."""
    ih, iw = ink.shape
    h, w = ih + int(rng.integers(30, 3 * height)), iw + int(rng.integers(40, 3 * height))
    top, left = int(rng.integers(8, h - ih - 20)), int(rng.integers(5, w - iw - 4))
    page = synth._paste(np.zeros((h, w), np.float32), ink, top, left)
    lines = np.zeros((h, w), np.float32)
    width = int(rng.integers(1, 3))
    if form == "underlined":
        y = top + ih + int(rng.integers(-2, max(3, height // 8)))
        synth._hline(lines, y, 2, w - 2, int(rng.integers(1, max(2, height // 20) + 1)))
        return page, lines
    pitch = height * (rng.uniform(0.45, 0.9) if form == "ruled" else rng.uniform(0.2, 0.5))
    for y in np.arange(rng.uniform(0, pitch), h, pitch):
        synth._hline(lines, y, 0, w, width)
    if form == "squared":
        for x in np.arange(rng.uniform(0, pitch), w, pitch):
            synth._vline(lines, x, 0, h, width)
    return page, lines * rng.uniform(0.4, 1.0)


def make(
    digits: list[np.ndarray], labels: list[int], style: str, stats: Stats, seed: int
) -> Sample:
    rng = np.random.default_rng(seed)
    if style == "photo":
        height, thicken = int(rng.integers(70, 130)), 0
    elif style == PAGE:
        height, thicken = int(rng.integers(50, 130)), 0
    elif style == FORMS:
        height, thicken = int(rng.integers(50, 120)), 0
    else:
        height = int(rng.integers(60, 110))
        thicken = round(height * rng.uniform(0.025, 0.065))  # bench/synth.py's canvas: alike
    truth = "".join(str(d) for d in labels)
    if style == FORMS:
        form = FORM_KINDS[int(rng.integers(len(FORM_KINDS)))]
        if form in ("boxes", "comb"):
            ink, lines = _in_cells(digits, height, form == "comb", rng)
            kinds: tuple[str, ...] = (form,)
        else:
            ink, kinds = _line(digits, height, thicken, stats, rng)
            ink, lines = _on_lines(ink, height, form, rng)
            kinds = tuple(sorted({*kinds, form} - {"plain"}))
        jpeg = bool(rng.random() < 0.5)
        data = synth._form_sheet(ink, lines, rng, jpeg)
        return Sample(data, "image/jpeg" if jpeg else "image/png", truth, kinds)
    ink, kinds = _line(digits, height, thicken, stats, rng)
    if style == "photo":
        return Sample(_photo(ink, rng), "image/jpeg", truth, kinds)
    if style == PAGE:
        return Sample(_page(ink, rng), "image/jpeg", truth, kinds)
    return Sample(_canvas(ink, rng), "image/png", truth, kinds)


def sample(
    images: np.ndarray, labels: np.ndarray, style: str, stats: Stats, k: int, lengths=(2, 6)
) -> Sample:
    """The set's `k`-th number of `style`: its digits drawn from `images`, its seed from `k`."""
    seed = (
        stats.seed
        + 7919 * k
        + {"photo": 0, "canvas": 104_729, PAGE: 209_459, FORMS: 314_159}[style]
    )
    rng = np.random.default_rng(seed)
    count = int(rng.integers(lengths[0], lengths[1] + 1))
    idx = rng.choice(len(images), count, replace=False)
    return make([images[i] for i in idx], [int(labels[i]) for i in idx], style, stats, seed)


def samples(
    images: np.ndarray, labels: np.ndarray, style: str, stats: Stats, n: int, lengths=(2, 6)
) -> list[Sample]:
    return [sample(images, labels, style, stats, k, lengths) for k in range(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(artifacts: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(port)),
            *("--artifacts", str(artifacts), "--workers", "1"),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            if requests.get(url + "/readyz", timeout=1).status_code == 200:
                return proc, url
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    proc.terminate()
    raise RuntimeError("the server was not ready after 120 s")


def post(session: requests.Session, url: str, s: Sample, mode: str | None) -> tuple[dict, float]:
    params = {"mode": mode} if mode else None
    t0 = time.perf_counter()
    r = session.post(
        url + "/predict",
        data=s.data,
        params=params,
        headers={"Content-Type": s.media_type},
        timeout=60,
    )
    elapsed = time.perf_counter() - t0
    return r.json(), elapsed


def digits_right(truth: str, read: str) -> int:
    """Digits of `truth` read right, after aligning the two strings (a digit missed or split
    in two costs that digit, not every digit after it)."""
    matcher = difflib.SequenceMatcher(None, truth, read, autojunk=False)
    return sum(b.size for b in matcher.get_matching_blocks())


def score(answers: list[tuple[Sample, dict]]) -> dict:
    n = len(answers)
    exact = flagged = right = total = wrong_length = refused = flagged_wrong = wrong = 0
    for s, a in answers:
        read = a.get("number", "")
        total += len(s.truth)
        if "number" not in a:
            refused += 1
            wrong += 1
            continue
        exact += read == s.truth
        wrong += read != s.truth
        flagged += a["uncertain"]
        flagged_wrong += a["uncertain"] and read != s.truth
        right += digits_right(s.truth, read)
        wrong_length += len(read) != len(s.truth)
    return {
        "numbers": n,
        "exact": exact / n if n else 0.0,
        "digit_accuracy": right / total if total else 0.0,
        "flagged": flagged / n if n else 0.0,
        "wrong_count": wrong_length / n if n else 0.0,
        "refused": refused / n if n else 0.0,
        "wrong_flagged": flagged_wrong / wrong if wrong else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.numbers", description=__doc__.split("\n")[0])
    p.add_argument("--artifacts", type=Path, default=ROOT / "artifacts")
    p.add_argument("--per-style", type=int, default=300, help="numbers per style and statistics")
    p.add_argument("--seed", type=int, default=0, help="added to every seed")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--samples", type=Path, help="write the first images of each set here")
    p.add_argument("--stats", default="main,other", help="main, other or both")
    p.add_argument(
        "--styles", default=",".join(STYLES), help=f"of {', '.join((*STYLES, PAGE, FORMS))}"
    )
    args = p.parse_args(argv)
    styles = args.styles.split(",")
    test = load_split(resolve_data_dir(os.environ.get("MNIST_DIR")), "test")
    images, labels = test.images, test.labels
    sets = {}
    for name in args.stats.split(","):
        base = {"main": MAIN, "other": OTHER}[name]
        stats = Stats(**{**base.__dict__, "seed": base.seed + args.seed})
        for style in styles:
            sets[(name, style)] = samples(images, labels, style, stats, args.per_style)
    if args.samples:
        args.samples.mkdir(parents=True, exist_ok=True)
        for (name, style), items in sets.items():
            for i, s in enumerate(items[:6]):
                ext = "jpg" if s.media_type == "image/jpeg" else "png"
                (args.samples / f"{name}-{style}-{i}-{s.truth}.{ext}").write_bytes(s.data)
    # Single digits made alike (same style, size): the cost baseline, one per number, and
    # how well a digit of each style is read alone, on SINGLES of the default styles' (a
    # page's 12-megapixel photos only one per number).
    singles = {
        style: samples(
            images,
            labels,
            style,
            MAIN,
            max(SINGLES if style in STYLES else 0, args.per_style),
            lengths=(1, 1),
        )
        for style in styles
    }
    proc, url = start_server(args.artifacts)
    results: dict = {}
    misses: list[dict] = []
    try:
        session = requests.Session()
        # Warm-up: the first requests of a worker pay for lazy set-up.
        for s in singles[styles[-1]][:5]:
            post(session, url, s, "number")
            post(session, url, s, None)
        number_ms = {style: 0.0 for style in styles}
        number_digits = {style: 0 for style in styles}
        single_ms = {style: 0.0 for style in styles}
        single_n = {style: 0 for style in styles}
        single_right: dict[tuple[str, int], bool] = {}
        answers: dict = {key: [] for key in sets}
        for (name, style), items in sets.items():
            for i, s in enumerate(items):
                a, t = post(session, url, s, "number")
                answers[(name, style)].append((s, a))
                number_ms[style] += 1000 * t
                number_digits[style] += len(s.truth)
                if a.get("number") != s.truth and len(misses) < 200:
                    misses.append(
                        {
                            "set": name,
                            "style": style,
                            "index": i,
                            "truth": s.truth,
                            "read": a.get("number", a.get("code")),
                            "kinds": s.kinds,
                        }
                    )
                b, t = post(session, url, singles[style][i], None)
                single_ms[style] += 1000 * t
                single_n[style] += 1
                single_right[(style, i)] = b.get("label") == int(singles[style][i].truth)
        for style, items in singles.items():
            for i, s in enumerate(items):
                if (style, i) not in single_right:
                    a, _ = post(session, url, s, None)
                    single_right[(style, i)] = a.get("label") == int(s.truth)
    finally:
        proc.terminate()
        proc.wait(30)
    for (name, style), got in answers.items():
        results[f"{name}/{style}"] = score(got)
        for kind in ("plain", "touching", "drift", "slant", *FORM_KINDS):
            sub = [(s, a) for s, a in got if kind in s.kinds]
            if sub:
                results[f"{name}/{style}/{kind}"] = score(sub)
        for count in range(2, 7):
            sub = [(s, a) for s, a in got if len(s.truth) == count]
            if sub:
                results[f"{name}/{style}/{count} digits"] = score(sub)
    for name in args.stats.split(","):
        got = [x for (n, _), v in answers.items() if n == name for x in v]
        results[f"{name}/all"] = score(got)
    # How well the same kind of image of one digit is read alone, and what that makes of a
    # number whose digits were each read as well: where reading numbers is bounded by reading
    # digits, not by finding them.
    # Only the default styles' singles are digits of a number's size (a page's are smaller).
    alone = {
        style: float(np.mean([v for (s, _), v in single_right.items() if s == style]))
        for style in styles
        if style in STYLES
    }
    bound = {
        f"{name}/{style}": float(np.mean([alone[style] ** len(s.truth) for s, _ in got]))
        for (name, style), got in answers.items()
        if style in alone
    }
    cost = {
        style: {
            "ms_per_digit": number_ms[style] / max(1, number_digits[style]),
            "ms_per_single": single_ms[style] / max(1, single_n[style]),
        }
        for style in styles
    }
    for c in cost.values():
        c["ratio"] = c["ms_per_digit"] / c["ms_per_single"]
    command = "python -m bench.numbers " + " ".join(argv if argv is not None else sys.argv[1:])
    report = {
        "command": command.strip(),
        "results": results,
        "alone": alone,
        "bound": bound,
        "cost": cost,
        "misses": misses,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "numbers.json").write_text(json.dumps(report, indent=1) + "\n")
    md = table(report)
    (args.out / "numbers.md").write_text(md)
    print(md)
    return 0


def table(report: dict) -> str:
    lines = [
        "# Numbers read by POST /predict?mode=number",
        "",
        f"`MNIST_DIR=... {report['command']}` on the shipped bundle, a `python -m server` on "
        "127.0.0.1 (one worker), answered over HTTP.",
        "",
        "| set | numbers | read exactly | digits right | wrong digit count | flagged uncertain "
        "| wrong ones flagged |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, r in report["results"].items():
        bold = "**" if key.count("/") == 1 else ""
        lines.append(
            f"| {bold}{key}{bold} | {r['numbers']:,} | {bold}{100 * r['exact']:.1f} %{bold} | "
            f"{100 * r['digit_accuracy']:.2f} % | {100 * r['wrong_count']:.1f} % | "
            f"{100 * r['flagged']:.1f} % | {100 * r['wrong_flagged']:.0f} % |"
        )
    if report["alone"]:
        lines += [
            "",
            "Single digits alone, the same kinds of image (one digit each, made as main's, "
            "posted without `mode`): "
            + ", ".join(f"{s} {100 * a:.1f} % right" for s, a in report["alone"].items())
            + ". Were each digit of a number read as well as alone, the numbers read exactly "
            "would be: "
            + ", ".join(f"{k} {100 * b:.1f} %" for k, b in report["bound"].items())
            + ".",
        ]
    lines += [
        "",
        "Cost, in the same run (single-digit requests of each style interleaved with the "
        "numbers, one connection):",
        "",
        "| style | ms per digit in a number | ms per single-digit request | ratio |",
        "|---|---:|---:|---:|",
    ]
    for style, c in report["cost"].items():
        lines.append(
            f"| {style} | {c['ms_per_digit']:.2f} | {c['ms_per_single']:.2f} | {c['ratio']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
