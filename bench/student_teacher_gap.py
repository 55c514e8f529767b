"""Where a student's gap to the teacher is: does it fail to fit the teacher's labels, or to generalise?

    compress label RUN/corpus/test --out TEST_LABELS --teacher RUN/teacher    # the teacher's curves on test
    python bench/student_teacher_gap.py --run RUN --test-labels TEST_LABELS STUDENT.pt [...]

For each student, all as MSE / the predict-the-mean MSE (labeled-split mean, as the reports):

* train fit: student vs the teacher's pseudo-labels on every ``--every``-th utterance of RUN/pseudo (the labels it
  was trained on), and the teacher's own error on them against the held-back ground truth;
* test, per language (or ``--by`` voice / variant) and overall: student vs ground truth, teacher vs ground truth, their ratio, and student vs
  teacher.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from students.data import load_split, predict_split
from students.model import load_student
from teacher.dataset import Dataset


def _subset(split, idx):
    for name in ("audio", "targets", "phonemes"):
        setattr(split, name, [getattr(split, name)[i] for i in idx])
    return split


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--test-labels", type=Path, required=True, help="the teacher's labels of RUN/corpus/test")
    ap.add_argument(
        "--every", type=int, default=8, help="train-fit subset: every Nth pseudo-labeled utterance"
    )
    ap.add_argument(
        "--by",
        default="language",
        help="test-split metadata key to break the test rows down by: language (default), voice, or variant "
        "(the voice's espeak-ng variant, e.g. norbert, across languages)",
    )
    ap.add_argument("students", nargs="+", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    mean = load_split(args.run / "corpus" / "labeled", field="truth").target_mean()

    def ratio(a, b, g):
        return float(((a - b) ** 2).mean() / ((g - mean) ** 2).mean())

    idx = list(range(0, len(Dataset(args.run / "pseudo")), args.every))
    pseudo = _subset(load_split(args.run / "pseudo", field="labels"), idx)
    truth = np.concatenate(_subset(load_split(args.run / "pseudo", field="truth"), idx).targets)
    labels = np.concatenate(pseudo.targets)
    test = load_split(args.run / "corpus" / "test", field="truth")
    teacher_test = load_split(args.test_labels, field="labels").targets
    metas = [u.meta for u in Dataset(args.run / "corpus" / "test")]
    if args.by == "variant":
        groups = [str(m.get("voice")).split("+")[-1] for m in metas]
    else:
        groups = [str(m.get(args.by)) for m in metas]
    print(
        f"train-fit subset: {len(idx)} utterances; teacher vs held-back truth {ratio(labels, truth, truth):.3f}"
    )
    for path in args.students:
        model = load_student(path)
        fit = np.concatenate(predict_split(model, pseudo))
        print(f"{path}\n  train fit: student vs teacher labels {ratio(fit, labels, truth):.3f}, "
              f"student vs truth {ratio(fit, truth, truth):.3f}")  # fmt: skip
        preds = predict_split(model, test)
        for group in [*sorted(set(groups)), "all"]:
            keep = [i for i, x in enumerate(groups) if group in ("all", x)]
            g = np.concatenate([test.targets[i] for i in keep])
            s = np.concatenate([preds[i] for i in keep])
            t = np.concatenate([teacher_test[i] for i in keep])
            st, tt = ratio(s, g, g), ratio(t, g, g)
            print(f"  test {group:<8} student {st:.3f}  teacher {tt:.3f}  x teacher {st / tt:.2f}  "
                  f"student vs teacher {ratio(s, t, g):.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
