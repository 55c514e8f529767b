"""Merge separately trained teachers of one shape into one ensemble checkpoint and evaluate it on a test split.

    python bench/teacher_merge.py --out OUT --test CORPUS/test [--feature-cache DIR] TEACHER_DIR [TEACHER_DIR ...]
        [--render-from DIR --render-blend B]

Writes OUT/teacher.pt: the members' decoders as one ``TeacherEnsemble`` (config ``members = N``; curves averaged),
with the first teacher's encoder config and label mean. It is an ordinary teacher checkpoint: ``compress label
--teacher OUT`` pseudo-labels with it, ``compress teacher eval`` evaluates it. Unlike ``compress teacher train
--ensemble N`` (members from seeds the trainer picks), this averages teachers trained any way, e.g. the seeds of
``bench/teacher_variants.py`` or several self-trained teachers. Prints the test metrics, overall and by language.

``--render-from DIR --render-blend B`` also carries DIR's decoder (a teacher trained with ``--viseme-weight``) in the
checkpoint, and the teacher's curves become ``(1 - B) x`` the merged decoders' ``+ B x`` DIR's viseme posteriors
rendered through the coarticulation model (``teacher.model.attach_render``, ``teacher/render.py``; the caveat there
applies). One TEACHER_DIR is then kept as it is, not made an ensemble.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from teacher.fsutil import atomic_torch_save
from teacher.model import Teacher, TeacherConfig, TeacherError, attach_render
from teacher.train import evaluate_teacher, format_groups


def load(path: Path) -> dict:
    if not (path / "teacher.pt").is_file():
        raise SystemExit(f"{path}: no teacher.pt here")
    return torch.load(path / "teacher.pt", map_location="cpu", weights_only=True)


def merge(paths: list[Path]) -> dict:
    ckpts = [load(p) for p in paths]
    if len(ckpts) == 1:
        return ckpts[0]
    config = TeacherConfig.from_dict(ckpts[0]["config"])
    for path, ckpt in zip(paths, ckpts):
        if TeacherConfig.from_dict(ckpt["config"]) != config or ckpt["encoder"] != ckpts[0]["encoder"]:
            raise SystemExit(f"{path}: another decoder shape or encoder than {paths[0]}; cannot average them")
        if config.members != 1:
            raise SystemExit(f"{path}: already an ensemble; merge single teachers")
    state = {f"members.{k}.{n}": v for k, c in enumerate(ckpts) for n, v in c["state_dict"].items()}
    return {**ckpts[0], "config": replace(config, members=len(ckpts)).to_dict(), "state_dict": state}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--test", type=Path, required=True, help="dataset folder with ground truth (CORPUS/test)")
    ap.add_argument("--feature-cache", type=Path, default=None)
    ap.add_argument(
        "--render-from", type=Path, help="teacher with the viseme head whose render is blended in"
    )
    ap.add_argument("--render-blend", type=float, default=0.25, help="share of the render (default 0.25)")
    ap.add_argument("teachers", type=Path, nargs="+")
    args = ap.parse_args()
    ckpt = merge(args.teachers)
    names = " + ".join(p.name for p in args.teachers)
    if args.render_from:
        render = load(args.render_from)
        try:
            ckpt = attach_render(ckpt, render, args.render_blend)
        except TeacherError as exc:
            raise SystemExit(f"{args.render_from}: {exc}") from None
        names += f", {args.render_blend:g} x render of {args.render_from.name}"
    atomic_torch_save(args.out / "teacher.pt", ckpt)
    teacher = Teacher.load(args.out)
    teacher.features.cache_dir = args.feature_cache
    m = evaluate_teacher(teacher, args.test, by=("language",))
    print(
        f"{names}: test mse/mean {m['mse_ratio_to_mean']:.4f}  lip closure {m['lip_closure']:.3f}  "
        f"jitter {m['jitter_ratio']:.2f}"
    )
    print(format_groups(m))


if __name__ == "__main__":
    main()
