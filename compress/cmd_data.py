"""`compress livelink import|export` and `compress audio check`: bring captured data in, take curves out."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from teacher.audio import load_many
from teacher.constants import ARKIT_52, DEFAULT_FPS, SAMPLE_RATE, SUPPORTED_FPS
from teacher.dataset import MANIFEST, Dataset
from teacher.errors import FacedistillError
from teacher.livelink import import_labeled, write_livelink_csv, write_rig_csv


class ExportError(FacedistillError, ValueError):
    """An export request that cannot be met (unknown utterance, unlabeled dataset, bad array)."""


def _cmd_import(args: argparse.Namespace) -> int:
    manifest, errors = import_labeled(args.folder, args.out, fps=args.fps, csv_fps=args.csv_fps)
    for line in errors:
        print(f"skipped: {line}", file=sys.stderr)
    totals = manifest["totals"]
    print(
        f"imported {totals['utterances']} captures, {totals['seconds']:.1f} s, {totals['frames']} frames at "
        f"{args.fps} fps, {len(manifest['channel_names'])} channels -> {Path(args.out) / MANIFEST}"
    )
    return 1 if errors else 0


def _write(path: Path, curves: np.ndarray, *, fps: int, names: list[str], fmt: str) -> None:
    is_arkit = {n.lower() for n in names} == {n.lower() for n in ARKIT_52}
    if fmt == "livelink" or (fmt == "auto" and is_arkit):
        write_livelink_csv(path, curves, fps=fps, channel_names=names)
    else:
        write_rig_csv(path, curves, fps=fps, channel_names=names)


def _cmd_export(args: argparse.Namespace) -> int:
    source, out = Path(args.source), Path(args.out)
    if source.suffix == ".npy":
        curves = np.load(source)
        if curves.ndim != 2 or curves.shape[1] != len(ARKIT_52):
            msg = f"{source}: expected a [frames, 52] ARKit array, got shape {curves.shape}"
            raise ExportError(msg)
        _write(out, curves, fps=args.fps or DEFAULT_FPS, names=list(ARKIT_52), fmt=args.format)
        print(f"wrote {len(curves)} frames -> {out}")
        return 0
    dataset = Dataset(source)
    fps = dataset.fps
    if args.fps and args.fps != fps:
        msg = f"{source}: dataset is at {fps} fps; --fps {args.fps} would mislabel its frames"
        raise ExportError(msg)
    written = 0
    for utt in dataset:
        if args.utterance and utt.id != args.utterance:
            continue
        curves = utt.truth if args.curves == "truth" else utt.labels
        if curves is None:
            msg = f"{source}: utterance {utt.id} has no {args.curves} curves (try --curves labels|truth)"
            raise ExportError(msg)
        path = out if args.utterance else out / f"{utt.id}.csv"
        _write(path, curves, fps=fps, names=dataset.channel_names, fmt=args.format)
        written += 1
    if args.utterance and not written:
        msg = f"{source}: no utterance with id {args.utterance!r}"
        raise ExportError(msg)
    print(f"wrote {written} CSV file(s) -> {out}")
    return 0


def _cmd_audio_check(args: argparse.Namespace) -> int:
    loaded, errors = load_many(args.files)
    for path, audio in loaded:
        print(f"ok    {path}: {len(audio) / SAMPLE_RATE:.2f} s")
    for line in errors:
        print(f"FAIL  {line}")
    print(f"{len(loaded)} ok, {len(errors)} failed")
    return 1 if errors else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    ll = subparsers.add_parser(
        "livelink",
        help="import captured Live Link Face / rig CSV takes as a labeled dataset, or export curves as CSV",
        description="Move rig curves between CSV files (Epic Live Link Face takes or 'time,<channels>' rig tables) "
        "and facedistill datasets.",
    )
    ll_sub = ll.add_subparsers(dest="livelink_command", metavar="ACTION", required=True)
    imp = ll_sub.add_parser(
        "import",
        help="a folder of name.wav + name.csv captures -> a labeled dataset (labels = truth = captured curves)",
        description="Each audio file (.wav/.flac/.ogg) is paired with the CSV of the same name beside it. Curves are "
        "resampled onto the dataset frame grid by linear interpolation. Bad pairs are listed and skipped "
        "(exit code 1), the rest are imported. Use the result as --labeled data for `compress teacher train`.",
    )
    imp.add_argument("folder", help="folder searched recursively for name.wav + name.csv pairs")
    imp.add_argument("--out", required=True, help="dataset folder to write (manifest.json + shards/)")
    imp.add_argument("--fps", type=int, default=DEFAULT_FPS, choices=SUPPORTED_FPS, help="dataset frame rate")
    imp.add_argument(
        "--csv-fps",
        type=int,
        default=None,
        help="fps the Live Link Timecode FF field counts in (default: inferred; pass it for takes under 0.5 s)",
    )
    imp.set_defaults(handler=_cmd_import)

    exp = ll_sub.add_parser(
        "export",
        help="curves of a dataset (one CSV per utterance) or of a [frames, 52] .npy -> CSV",
        description="ARKit-52 curves become a Live Link Face CSV (readable by Unreal's Live Link Face importer); "
        "other rigs a 'time,<channels>' CSV.",
    )
    exp.add_argument("source", help="dataset folder or a .npy array of [frames, 52] ARKit curves")
    exp.add_argument(
        "--out", required=True, help="CSV file (with --utterance or .npy), else a folder of CSVs"
    )
    exp.add_argument("--utterance", help="export only this utterance id to the --out file")
    exp.add_argument("--curves", choices=("labels", "truth"), default="labels", help="which dataset curves")
    exp.add_argument("--fps", type=int, choices=SUPPORTED_FPS, help="frame rate of a .npy (default 30)")
    exp.add_argument(
        "--format", choices=("auto", "livelink", "rig"), default="auto", help="auto: Live Link for ARKit-52"
    )
    exp.set_defaults(handler=_cmd_export)

    audio = subparsers.add_parser(
        "audio",
        help="check audio files load (mono 16 kHz, not truncated, silent, NaN or too long)",
        description="Audio tools. Every file facedistill reads goes through the same loader and checks.",
    )
    audio_sub = audio.add_subparsers(dest="audio_command", metavar="ACTION", required=True)
    check = audio_sub.add_parser(
        "check",
        help="load each file and print ok or one error line per file; exit 1 if any failed",
        description="Loads every file exactly as training and labeling will; a bad file does not stop the batch.",
    )
    check.add_argument("files", nargs="+", help="audio files (.wav, .flac, .ogg)")
    check.set_defaults(handler=_cmd_audio_check)
