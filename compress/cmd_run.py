"""`compress run`: the main job, end to end, on the embedded default."""

from __future__ import annotations

import argparse
from pathlib import Path

from compress.cliargs import comma_list
from compress.pipeline import RunConfig, run_pipeline
from teacher.constants import SUPPORTED_FPS


def cmd_run(args: argparse.Namespace) -> int:
    workdir = args.workdir or Path("runs/quick" if args.quick else "runs/default")
    reports = args.reports or (workdir / "reports" if args.quick else Path("reports"))
    options: dict = {"seed": args.seed}
    if args.labeled_languages:
        options["labeled_languages"] = tuple(comma_list(args.labeled_languages))
    if args.teacher_ensemble is not None:
        options["teacher_members"] = args.teacher_ensemble
    if args.self_train is not None:
        options["self_train_epochs"] = args.self_train
    if args.teacher_fps is not None:
        options["teacher_fps"] = args.teacher_fps
    run_pipeline(
        workdir,
        reports,
        config=RunConfig.quick_config(**options) if args.quick else RunConfig(**options),
        device=args.device,
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run",
        help="the whole pipeline on the embedded default: corpus -> ... -> report",
        description="Build the embedded corpus, train the Whisper-encoder teacher, pseudo-label the unlabeled "
        "split, distil the student presets (pseudo-labels + ground truth; stage 1 `small` seeds stage 2), prune/quantize/export "
        "ONNX and TFLite binaries (windowed and streaming) with parity checks, profile them against the "
        "device budgets and write the report. Every stage skips what is already done: rerun to resume. "
        "The default run takes about 100 minutes on 2 CPU cores (reports/REPORT.md, Run table); --quick does the same at "
        "toy size.",
    )
    p.add_argument("--quick", action="store_true", help="toy sizes (a few minutes); work folder runs/quick")
    p.add_argument("--workdir", type=Path, default=None, help="work folder (default runs/default)")
    p.add_argument(
        "--reports",
        type=Path,
        default=None,
        help="where the report goes (default reports/, the committed reference; --quick: WORKDIR/reports)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of every stage (default 0)")
    p.add_argument(
        "--labeled-languages",
        help="comma-separated languages of the corpus's labeled split (default en-us,de,es,nl,cs): the languages the "
        "teacher learns from ground truth",
    )
    p.add_argument(
        "--teacher-ensemble",
        type=int,
        metavar="K",
        help="train the teacher as K decoders from different seeds and average them (default 1; see compress "
        "teacher train --ensemble)",
    )
    p.add_argument(
        "--teacher-fps",
        type=int,
        choices=SUPPORTED_FPS,
        help="frame rate of the teacher's decoder (default: the corpus's 30; 60 measured better, README §5; see "
        "compress teacher train --fps)",
    )
    p.add_argument(
        "--self-train",
        type=int,
        metavar="EPOCHS",
        help="self-training: a round-2 teacher trained EPOCHS epochs on the labeled split plus round 1's "
        "pseudo-labels relabels the unlabeled split, and the students learn from it (default 0 = off; 10 is the "
        "measured setting)",
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="where the students train: cpu (default), cuda, cuda:N or auto (see compress distill --device)",
    )
    p.set_defaults(handler=cmd_run)
