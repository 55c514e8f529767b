"""Distil a student with "hints" from the big teacher: extra outputs regressed onto the teacher's hidden states.

    python bench/student_hints.py --run RUN --out OUT NAME SOURCE K WEIGHT [--seed S] [--steps N]
        [--hint-teacher DIR] [--feature-cache DIR]

SOURCE is what the extra outputs learn, per rig frame of every pseudo-labeled (and labeled) utterance:

* ``gru``: the teacher decoder's BiGRU output (the representation its output layer reads),
* ``whisper``: the decoder's normalised input (Whisper layers + log-mel, as ``teacher.model.FeatureExtractor``),
* ``visemes``: the viseme posteriors of a teacher with the viseme head (``--hint-teacher``, trained with
  ``compress teacher train --viseme-weight W``): phonetic classes, the representation a tiny model may lack;
* ``none``: no hints (the control: the same training as ``compress distill`` for the preset).

``gru`` and ``whisper`` are reduced to their first K principal components (fit on the training frames), scaled to
unit variance and squashed by a sigmoid (the student's outputs are sigmoids); ``visemes`` are used as they are (K is
ignored). The student gets K more output channels, trained with
MSE x WEIGHT beside the usual curve loss (the hint channels take no part in the curve, velocity, closure or
labeled losses; the labeled split's hints come from the same teacher); only the rig channels are evaluated, on RUN's
test split. The preset's distill config is RUN's own (``RUN/students/PRESET/card.json``), RUN's stage-1 ``small``
is the warm-start source. The hint loss is added by wrapping ``students.distill.curve_loss`` for this process only:
no library code changes. Hints are cached in OUT. Set OMP_NUM_THREADS to pin the threads.

Why: issue 4's feature loss matches the stage-1 ``small``, a weaker model than the teacher here
(reports/bench/distill.txt); the teacher's own hidden states are the richer target this tries instead.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

import students.distill as distill_module
from students.data import Batch, Split, load_split, predict_split
from students.distill import DistillConfig, load_pseudo, train_student
from students.model import load_student
from teacher.metrics import evaluate
from teacher.model import Teacher


@torch.no_grad()
def teacher_hidden(split: Split, teacher: Teacher, source: str) -> list[np.ndarray]:
    dec = teacher.decoder  # eval mode (Teacher.load): no dropout
    read = {
        "gru": dec.hidden,
        "whisper": dec.normalise,
        "visemes": lambda f: dec.forward_with_aux(f)[1].softmax(-1),
    }[source]
    out = []
    for i in range(0, len(split.audio), 16):
        out.extend(
            read(torch.from_numpy(f)[None])[0].numpy() for f in teacher.features(split.audio[i : i + 16])
        )
    return out


def hints_for(
    teacher_dir: Path, out: Path, source: str, k: int, train: Split, labeled: Split, cache: Path | None
):
    teacher = Teacher.load(teacher_dir)
    path = out / f"hints_{source}_{k}_{teacher.identity[:12]}.npz"  # per teacher: --hint-teacher may change
    if path.is_file():
        z = np.load(path, allow_pickle=True)
        return list(z["train"]), list(z["labeled"])
    teacher.features.cache_dir = cache
    if source == "visemes" and not teacher.config.aux_classes:
        raise SystemExit(f"{teacher_dir}: no viseme head (give --hint-teacher a --viseme-weight teacher)")
    raw_t, raw_l = teacher_hidden(train, teacher, source), teacher_hidden(labeled, teacher, source)
    if source == "visemes":  # posteriors, used as they are
        ht, hl = [h.astype(np.float32) for h in raw_t], [h.astype(np.float32) for h in raw_l]
    else:
        frames = np.concatenate(raw_t)
        mu, sd = frames.mean(0), frames.std(0) + 1e-6
        z = (frames - mu) / sd
        _, s, vt = np.linalg.svd(z[::7], full_matrices=False)
        proj = vt[:k].T
        scale = (z @ proj).std(0)
        explained = (s[:k] ** 2).sum() / (s**2).sum()
        print(f"hints: {source} {frames.shape[1]}-d, first {k} components explain {explained:.2f}")

        def squash(h: np.ndarray) -> np.ndarray:
            return (1 / (1 + np.exp(-(((h - mu) / sd) @ proj) / scale))).astype(np.float32)

        ht, hl = [squash(h) for h in raw_t], [squash(h) for h in raw_l]
    np.savez(path, train=np.array(ht, dtype=object), labeled=np.array(hl, dtype=object))
    return ht, hl


def with_hints(split: Split, hints: list[np.ndarray]) -> Split:
    targets = [np.concatenate([t, h], axis=1) for t, h in zip(split.targets, hints, strict=True)]
    names = list(split.channel_names) + [f"hint{j}" for j in range(hints[0].shape[1])]
    return replace(split, targets=targets, channel_names=names)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="finished `compress run` work folder")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--preset", default="tiny-mel")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None, help="default: the preset's steps in RUN")
    ap.add_argument("--feature-cache", type=Path, default=None, help="teacher feature cache (default: none)")
    ap.add_argument("name")
    ap.add_argument(
        "--hint-teacher",
        type=Path,
        default=None,
        help="teacher whose states are the hints (default RUN/teacher)",
    )
    ap.add_argument("source", choices=("none", "gru", "whisper", "visemes"))
    ap.add_argument("k", type=int)
    ap.add_argument("weight", type=float)
    args = ap.parse_args()

    card = json.loads((args.run / "students" / args.preset / "card.json").read_text())
    settings = DistillConfig.from_dict(
        {**card["distill_config"], "presets": [args.preset], "seed": args.seed}
    )
    steps = args.steps or settings.steps_for(args.preset)
    train = load_pseudo(args.run / "pseudo")
    labeled = load_split(args.run / "corpus" / "labeled")
    test = load_split(args.run / "corpus" / "test", field="truth")
    n_rig = len(train.channel_names)
    mean_vector = train.target_mean()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.source != "none":
        hint_teacher = args.hint_teacher or args.run / "teacher"
        ht, hl = hints_for(hint_teacher, args.out, args.source, args.k, train, labeled, args.feature_cache)
        train, labeled = with_hints(train, ht), with_hints(labeled, hl)

    rig_loss, rig_weights = distill_module.curve_loss, distill_module.closure_weights

    def curve_loss(pred, batch, velocity_weight, channel_weights=None):
        if pred.shape[-1] == n_rig:
            return rig_loss(pred, batch, velocity_weight, channel_weights)
        rig = Batch(batch.audio, batch.anchors, batch.targets[..., :n_rig], batch.mask)
        loss, last = rig_loss(pred[..., :n_rig], rig, velocity_weight, channel_weights)
        m = batch.mask.unsqueeze(-1).to(pred.dtype)
        err = ((pred[..., n_rig:] - batch.targets[..., n_rig:]) ** 2 * m).sum()
        hint = err / (m.sum() * (pred.shape[-1] - n_rig)).clamp(min=1)
        last["hint"] = hint.item()
        return loss + args.weight * hint, last

    distill_module.curve_loss = curve_loss
    distill_module.closure_weights = lambda names, w: rig_weights(list(names)[:n_rig], w)

    config = replace(settings.student_config(args.preset), channel_names=tuple(train.channel_names))
    small = load_student(args.run / "students" / settings.stage1 / "student.pt").requires_grad_(False)
    folder = args.out / args.name
    folder.mkdir(parents=True, exist_ok=True)
    student, summary = train_student(
        config, train, settings=settings, steps=steps, teacher=small, labeled=labeled,
        checkpoint=folder / "checkpoint.pt", progress=False,
    )  # fmt: skip
    preds = [p[:, :n_rig] for p in predict_split(student, test)]
    m = evaluate(preds, test.targets, test.phonemes, channel_names=test.channel_names, fps=test.fps,
                 mean_vector=mean_vector)  # fmt: skip
    teacher_mse = json.loads((args.run / "teacher" / "teacher.json").read_text())["metrics"]["test"]["mse"]
    hint = summary["last_losses"].get("hint")
    print(
        f"{args.name:<10} source={args.source:<7} k={args.k:<3} weight={args.weight:<5} seed={args.seed} "
        f"steps={steps}  test mse/mean {m['mse_ratio_to_mean']:.3f}  x teacher {m['mse'] / teacher_mse:.2f}  "
        f"lip closure {m['lip_closure']:.2f}" + (f"  last hint loss {hint:.4f}" if hint is not None else ""),
        flush=True,
    )


if __name__ == "__main__":
    main()
