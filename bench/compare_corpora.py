"""Which utterances two builds of a corpus disagree on: audio, labels or truth, per split, with their languages.

    python bench/compare_corpora.py OLD_CORPUS NEW_CORPUS

Used to show what a ground-truth change touches (stop 23: v1 -> v2 changed the truth of Polish test utterances
only). Utterances are matched by id; prints counts, never edits either corpus.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from teacher.dataset import Dataset


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    args = ap.parse_args()
    for split in ("labeled", "unlabeled", "test"):
        old = {u.id: u for u in Dataset(args.old / split)}
        new = {u.id: u for u in Dataset(args.new / split)}
        common = sorted(set(old) & set(new))
        audio = [k for k in common if not _same(old[k].audio, new[k].audio)]
        curves = [
            k
            for k in common
            if not (_same(old[k].labels, new[k].labels) and _same(old[k].truth, new[k].truth))
        ]
        langs = sorted({str(new[k].meta.get("language")) for k in curves})
        print(f"{split:<10} {len(common)} utterances in both ({len(old)} old, {len(new)} new): audio differs in "
              f"{len(audio)}, labels/truth differ in {len(curves)} {langs}")  # fmt: skip


if __name__ == "__main__":
    main()
