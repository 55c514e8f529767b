"""`compress teacher train|eval` and `compress label`: the Whisper-feature teacher and its pseudo-labels."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from compress.cliargs import comma_list
from teacher.constants import ARKIT_52, SUPPORTED_FPS
from teacher.dataset import Dataset
from teacher.errors import FacedistillError
from teacher.fsutil import atomic_write_json
from teacher.label import LabelConfig, pseudo_label
from teacher.metrics import format_metrics
from teacher.model import FEATURE_KINDS, Teacher, TeacherConfig
from teacher.train import TeacherTrainConfig, evaluate_teacher, format_groups, train_teacher

DEFAULT_CORPUS = "runs/default/corpus"
DEFAULT_TEACHER = "runs/default/teacher"


def register(subparsers: argparse._SubParsersAction) -> None:
    teacher = subparsers.add_parser(
        "teacher",
        help="train / evaluate the non-causal teacher (frozen Whisper-base encoder + BiGRU decoder)",
        description="The teacher maps a whole utterance to ARKit-52 curves. It sees the future (non-causal) and "
        "runs a frozen Whisper-base encoder, so it is too big for a device: its job is to label unlabeled audio "
        "for the students. It trains on the corpus's `labeled` split only.",
    )
    verbs = teacher.add_subparsers(dest="teacher_command", metavar="VERB")

    train = verbs.add_parser(
        "train",
        help="train the teacher on CORPUS/labeled (resumes from OUT/checkpoint.pt)",
        description="Encode the labeled split (plus augmented copies: noise, reverb, gain, band-limit, speed) "
        "once, cache the features, train the decoder with MSE + velocity loss (time-masked, dropout on the "
        "features) and keep the epoch that does best on one held-out labeled voice; write OUT/teacher.pt and "
        "OUT/teacher.json (config, data hash, held-out voice and best epoch, test-split metrics). Rerun after "
        "an interruption to resume from the last checkpoint.",
    )
    train.add_argument("--corpus", default=DEFAULT_CORPUS, help=f"corpus folder (default {DEFAULT_CORPUS})")
    train.add_argument("--out", default=DEFAULT_TEACHER, help=f"teacher folder (default {DEFAULT_TEACHER})")
    train.add_argument(
        "--features",
        choices=FEATURE_KINDS,
        default="both",
        help="decoder input: Whisper encoder features, 80-band log-mel, or both concatenated (default both)",
    )
    train.add_argument(
        "--epochs", type=int, help=f"training epochs (default {TeacherTrainConfig().epochs}, quick 6)"
    )
    train.add_argument("--quick", action="store_true", help="a smoke-run teacher in about a minute")
    train.add_argument("--seed", type=int, default=0, help="seed of initialisation, augmentation and order")
    train.add_argument(
        "--pseudo",
        help="self-training: also train on this pseudo-labeled dataset (the output of `compress label` with a "
        "first-round teacher); its labels are never recomputed from phonemes, and the best epoch is still "
        "picked on a held-out ground-truth voice",
    )
    train.add_argument(
        "--encoder-layers",
        help="comma-separated Whisper encoder layers read and concatenated (0 = embeddings, 1-6 = blocks, "
        "6 = the last), run by the PyTorch port of the encoder; 'last' = CTranslate2 int8's last layer only "
        f"(default {','.join(map(str, TeacherTrainConfig().encoder.layers)) or 'last'})",
    )
    train.add_argument(
        "--viseme-weight",
        type=float,
        help="weight of an auxiliary frame-wise viseme classification loss on the labeled split's phoneme "
        f"timings (default {TeacherTrainConfig().viseme_weight}; 0 = off)",
    )
    train.add_argument(
        "--render-blend",
        type=float,
        help="average this share of the viseme head's posteriors rendered through the ground truth's "
        "coarticulation model into the curves (needs --viseme-weight; default 0 = off; the render is the embedded "
        "corpus's own truth generator, see teacher/render.py; reports/bench/teacher_render.txt)",
    )
    train.add_argument(
        "--closure-hinge",
        type=float,
        help="weight of the closure hinge: on ground-truth closure frames, pull mouthClose above the lip-closure "
        f"threshold + {TeacherTrainConfig().closure_margin} (default {TeacherTrainConfig().closure_hinge_weight}; "
        "0 = off)",
    )
    train.add_argument(
        "--augment-variants",
        type=int,
        help=f"augmented copies per clip (default {TeacherTrainConfig().augment_variants}, quick 1)",
    )
    train.add_argument(
        "--gru-hidden",
        type=int,
        help=f"decoder BiGRU width per direction (default {TeacherConfig().gru_hidden}; "
        "reports/bench/teacher_variants.txt measures 192 to 384)",
    )
    train.add_argument(
        "--conv-channels",
        type=int,
        help=f"decoder conv width (default {TeacherConfig().conv_channels})",
    )
    train.add_argument(
        "--fps",
        type=int,
        choices=SUPPORTED_FPS,
        help="frame rate the decoder runs at (default: the corpus's). 60 on the 30 fps corpus: features averaged "
        "over 16.7 ms instead of 33 ms, labels recomputed at 60 fps, curves resampled to the corpus's rate when "
        "evaluated or written; crop, time masks and velocity weight keep their meaning in seconds",
    )
    train.add_argument(
        "--ensemble",
        type=int,
        help="train this many decoders from different seeds and average their curves (default "
        f"{TeacherConfig().members}; each member costs one training; the features are shared; a finished single "
        "teacher in OUT is reused as member 1)",
    )
    train.set_defaults(handler=cmd_train)

    ev = verbs.add_parser(
        "eval",
        help="metrics of a teacher on the test split and on the unlabeled split's held-back truth",
        description="Prints MSE (and its ratio to predicting the training mean), lip closure on p/b/m, jitter "
        "ratio and the worst channels, for every split that has ground truth; writes them as JSON.",
    )
    ev.add_argument("--teacher", default=DEFAULT_TEACHER, help="teacher.pt or its folder")
    ev.add_argument("--corpus", default=DEFAULT_CORPUS, help=f"corpus folder (default {DEFAULT_CORPUS})")
    ev.add_argument(
        "--splits", default="test,unlabeled", help="comma-separated splits (default test,unlabeled)"
    )
    ev.add_argument("--out", help="write the metrics JSON here (default TEACHER/metrics.json)")
    ev.add_argument(
        "--by",
        default="language",
        help="comma-separated utterance metadata keys to break the metrics down by, e.g. language,voice "
        "(default language; '' for none)",
    )
    ev.set_defaults(handler=cmd_eval)

    label = subparsers.add_parser(
        "label",
        help="pseudo-label a dataset or audio folder with a teacher (resumable, shardable)",
        description="Label SOURCE (a dataset folder, e.g. CORPUS/unlabeled, or a folder of wav/flac/ogg files) "
        "with a teacher into a dataset at --out. Each work unit is written atomically and named from its "
        "content hash and the teacher's hash: rerun to resume or to relabel for free. Spread the work with "
        "--shard i/n (one process per i, same --out on a shared filesystem), then run once with --merge.",
    )
    label.add_argument("source", help="dataset folder (with manifest.json) or folder of audio files")
    label.add_argument("--out", required=True, help="output dataset folder")
    label.add_argument("--teacher", default=DEFAULT_TEACHER, help="built-in teacher.pt or its folder")
    label.add_argument(
        "--onnx-teacher", help="use this ONNX model as the teacher instead (see teacher/byo.py)"
    )
    label.add_argument(
        "--channels", help="ONNX teacher: comma-separated channel names (default the 52 ARKit names)"
    )
    label.add_argument(
        "--fps", type=int, choices=(30, 60), default=30, help="ONNX teacher: output frame rate"
    )
    label.add_argument(
        "--mode",
        choices=("utterance", "window"),
        default="utterance",
        help="ONNX teacher: whole clip -> [T, C], or one window -> one frame",
    )
    label.add_argument("--window-samples", type=int, help="ONNX teacher, window mode: input length")
    label.add_argument("--shard", default="0/1", help="i/n: label units i, i+n, ... (default 0/1 = all)")
    label.add_argument("--merge", action="store_true", help="only write the manifest of finished units")
    label.add_argument("--files-per-unit", type=int, default=64, help="audio folders: files per work unit")
    label.set_defaults(handler=cmd_label)


def cmd_train(args: argparse.Namespace) -> int:
    corpus = Path(args.corpus)
    config = TeacherTrainConfig(model=TeacherConfig(features=args.features), seed=args.seed)
    if args.quick:
        config = replace(config, epochs=6, augment_variants=1)
    if args.epochs:
        config = replace(config, epochs=args.epochs)
    if args.augment_variants is not None:
        config = replace(config, augment_variants=args.augment_variants)
    if args.viseme_weight is not None:
        config = replace(config, viseme_weight=args.viseme_weight)
    if args.closure_hinge is not None:
        config = replace(config, closure_hinge_weight=args.closure_hinge)
    if args.render_blend is not None:
        if not 0 <= args.render_blend <= 1:
            raise FacedistillError(f"--render-blend {args.render_blend}: must lie in [0, 1]")
        if args.render_blend > 0 and config.viseme_weight <= 0:
            raise FacedistillError("--render-blend needs the viseme head: add --viseme-weight W (e.g. 0.02)")
        config = replace(config, model=replace(config.model, render_blend=args.render_blend))
    for key in ("gru_hidden", "conv_channels"):  # flag --gru-hidden -> TeacherConfig.gru_hidden, ...
        value = getattr(args, key)
        if value is not None:
            if value < 1:
                raise FacedistillError(f"--{key.replace('_', '-')} {value}: must be at least 1")
            config = replace(config, model=replace(config.model, **{key: value}))
    if args.fps is not None:
        config = config.at_fps(args.fps)
    if args.ensemble is not None:
        if args.ensemble < 1:
            raise FacedistillError(f"--ensemble {args.ensemble}: needs at least 1 member")
        config = replace(config, model=replace(config.model, members=args.ensemble))
    if args.encoder_layers:
        try:
            spec = args.encoder_layers.strip()
            layers = () if spec == "last" else tuple(int(x) for x in spec.split(","))
            config = replace(config, encoder=replace(config.encoder, layers=layers))
        except ValueError as exc:
            raise FacedistillError(f"--encoder-layers {args.encoder_layers!r}: {exc}") from None
    test = corpus / "test"
    card = train_teacher(
        corpus / "labeled",
        args.out,
        config=config,
        eval_dir=test if (test / "manifest.json").is_file() else None,
        pseudo_dir=args.pseudo,
    )
    for split, metrics in card["metrics"].items():
        print(f"teacher on {split}:\n{format_metrics(metrics)}")
    print(f"wrote {Path(args.out) / 'teacher.pt'} and teacher.json")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    teacher = Teacher.load(args.teacher)
    by = tuple(comma_list(args.by))
    results = {}
    for split in comma_list(args.splits):
        root = Path(args.corpus) / split
        if not (root / "manifest.json").is_file():
            print(f"teacher eval: skipping {root} (no dataset)", file=sys.stderr)
            continue
        if Dataset(root).manifest.get("has_truth") is False and split != "labeled":
            print(f"teacher eval: skipping {root} (no ground truth)", file=sys.stderr)
            continue
        results[split] = evaluate_teacher(teacher, root, by=by)
        print(f"teacher on {split}:\n{format_metrics(results[split])}")
        if by:
            print(format_groups(results[split]))
    if not results:
        msg = f"{args.corpus}: none of the splits {args.splits} has a dataset with ground truth"
        raise FacedistillError(msg)
    teacher_dir = Path(args.teacher) if Path(args.teacher).is_dir() else Path(args.teacher).parent
    out = Path(args.out) if args.out else teacher_dir / "metrics.json"
    atomic_write_json(out, {"teacher": teacher.identity, "metrics": results})
    print(f"wrote {out}")
    return 0


def _parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        msg = f"--shard {text!r}: expected i/n, e.g. 0/4"
        raise FacedistillError(msg) from None
    return i, n


def cmd_label(args: argparse.Namespace) -> int:
    if args.onnx_teacher:
        from teacher.byo import OnnxTeacher

        names = comma_list(args.channels) or list(ARKIT_52)
        teacher = OnnxTeacher(
            args.onnx_teacher,
            channel_names=names,
            fps=args.fps,
            mode=args.mode,
            window_samples=args.window_samples,
        )
    else:
        teacher = Teacher.load(args.teacher)
    try:
        config = LabelConfig(
            shard=_parse_shard(args.shard), files_per_unit=args.files_per_unit, merge_only=args.merge
        )
    except ValueError as exc:
        raise FacedistillError(str(exc)) from None
    manifest = pseudo_label(args.source, args.out, teacher=teacher, config=config)
    if manifest is not None:
        totals = manifest["totals"]
        print(json.dumps({"out": args.out, **totals}))
    return 0
