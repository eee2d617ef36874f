"""How the served models do on realistic uploads, and how well `uncertain` tells non-digits.

    python -m bench.realworld [--artifacts artifacts] [--per-kind 1000] [--out bench/results]
                              [--seed 0] [--kinds tight_crop,boxed] [--digits last|first]

`--seed` shifts every generator's seeds and `--digits first` takes the test set's first digits
instead of its last: tune with those, and report with the defaults, which tuning never saw.
`--kinds` scores only the named kinds of bench/synth.py (no MNIST, fonts or non-digits).

Runs the server's own preprocessing and ensemble in-process (the same code as POST /predict,
minus HTTP) on: MNIST test digits turned into photos, scans, canvas drawings and the other
kinds of bench/synth.py; digits printed in the fonts training never uses; and images that
are not digits (letters in those fonts). Writes realworld.json and realworld.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np

from bench import synth
from server import manifest as manifest_mod
from server.ensemble import Ensemble
from server.errors import ApiError
from server.predictor import Predictor
from training.data import load_split, resolve_data_dir
from training.provenance import git_commit


def score(predictor: Predictor, items: list[tuple[bytes, int | None]]) -> dict:
    """Accuracy, uncertain and refusal rates over (image bytes, true digit or None)."""
    right = flagged = refused = 0
    reasons: Counter = Counter()
    t0 = time.perf_counter()
    for data, truth in items:
        answer = predictor.predict([data])[0]
        if isinstance(answer, ApiError):
            refused += 1
            reasons[answer.code] += 1
            continue
        right += truth is not None and answer.label == truth
        flagged += answer.uncertain
        reasons.update(answer.uncertain_reasons)
    n = len(items)
    return {
        "images": n,
        "accuracy": right / n,
        "uncertain": flagged / n,
        "refused": refused / n,
        "flagged_or_refused": (flagged + refused) / n,
        "reasons": dict(reasons.most_common()),
        "ms_per_image": 1000 * (time.perf_counter() - t0) / n,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    p.add_argument("--data-dir", help="MNIST (default: $MNIST_DIR)")
    p.add_argument("--per-kind", type=int, default=1000, help="digits per kind")
    p.add_argument("--not-digits", type=int, default=300, help="images per non-digit kind")
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    p.add_argument("--seed", type=int, default=0, help="added to every generator's seed")
    p.add_argument("--digits", choices=("last", "first"), default="last")
    p.add_argument("--kinds", help="comma-separated kinds of bench/synth.py: only these")
    args = p.parse_args(argv)

    started, code = time.perf_counter(), git_commit()
    manifest = manifest_mod.load(args.artifacts)
    predictor = Predictor(manifest, Ensemble(manifest), max_pixels=40_000_000)
    test = load_split(resolve_data_dir(args.data_dir), "test")
    rows: dict[str, dict] = {}

    kinds = args.kinds.split(",") if args.kinds else [k for k in synth.KINDS if k != "mnist_png"]
    if not args.kinds:
        everything = [
            (synth.mnist_png(img, None), int(y))
            for img, y in zip(test.images, test.labels, strict=True)
        ]
        rows["mnist_png (all 10,000)"] = score(predictor, everything)
    # The same digits for every kind, so kinds compare fairly.
    n = len(test.labels)
    idx = range(n - args.per_kind, n) if args.digits == "last" else range(args.per_kind)
    for kind in kinds:
        items = [
            (synth.make(kind, test.images[i], i + args.seed * n), int(test.labels[i])) for i in idx
        ]
        rows[kind] = score(predictor, items)
        print(
            f"{kind:<22} {100 * rows[kind]['accuracy']:.2f} %  "
            f"flagged {100 * rows[kind]['uncertain']:.1f} %  "
            f"refused {100 * rows[kind]['refused']:.1f} %",
            flush=True,
        )
    if args.kinds:
        print(json.dumps({k: r["reasons"] for k, r in rows.items()}))
        return 0

    fonts = synth.digit_fonts()
    rng = np.random.default_rng(args.seed)
    printed = [(synth.printed(str(d), f, rng), d) for f in fonts for d in range(10)]
    rows[f"printed ({len(fonts)} held-out fonts)"] = score(predictor, printed)

    not_digits = {
        kind: score(
            predictor,
            [
                (fn(np.random.default_rng(i + args.seed * args.not_digits)), None)
                for i in range(args.not_digits)
            ],
        )
        for kind, fn in synth.NOT_DIGITS.items()
    }

    digit_rows = list(rows.values())
    summary = {
        "digits_flagged": float(np.mean([r["uncertain"] for r in digit_rows])),
        "non_digits_flagged_or_refused": float(
            np.mean([r["flagged_or_refused"] for r in not_digits.values()])
        ),
    }
    result = {
        "artifacts": str(args.artifacts),
        "rule": predictor.rule.describe(),
        "digits": rows,
        "not_digits": not_digits,
        "summary": summary,
        "fonts": [f.name for f in fonts],
        "command": "python -m bench.realworld " + " ".join(argv or []),
        "cpu_count": os.cpu_count(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "realworld.json").write_text(json.dumps(result, indent=2))

    commit = (code["commit"] or "unknown")[:7] + (
        " with uncommitted changes" if code["dirty"] else ""
    )
    lines = [
        "# Realistic uploads",
        "",
        f"`{result['command'].strip()}` on commit {commit}, {time.strftime('%Y-%m-%d')}: "
        f"the server's preprocessing and the bundle in {args.artifacts} with its uncertainty "
        f"rule, in process; {time.perf_counter() - started:.0f} s on {os.cpu_count()} CPUs.",
        "",
        "| kind | images | vote accuracy | flagged uncertain | refused |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {k} | {r['images']:,} | {100 * r['accuracy']:.2f} % | "
        f"{100 * r['uncertain']:.1f} % | {100 * r['refused']:.1f} % |"
        for k, r in rows.items()
    ]
    lines += [
        "",
        "| not a digit | images | flagged uncertain | refused (4xx) | flagged or refused |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {k} | {r['images']:,} | {100 * r['uncertain']:.1f} % | {100 * r['refused']:.1f} % "
        f"| **{100 * r['flagged_or_refused']:.1f} %** |"
        for k, r in not_digits.items()
    ]
    lines += [
        "",
        f"Rule: {result['rule']}.",
        f"Digits flagged (mean over kinds): {100 * summary['digits_flagged']:.2f} %; "
        f"non-digits flagged or refused (mean over kinds): "
        f"{100 * summary['non_digits_flagged_or_refused']:.1f} %.",
    ]
    (args.out / "realworld.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
