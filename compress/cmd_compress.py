"""`compress prune | quantize | export | ship`: shrink one trained student and write checked on-device binaries.

Calibration and parity use real audio: windows are cut at the frame anchors of real utterances (zero-padded at the
edges, as the engine sees them); even-numbered utterances calibrate, odd-numbered ones are held out for parity.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from compress.cliargs import comma_list
from compress.export import DTYPES, FORMATS, ExportConfig, ExportError, export_each, run_binary
from compress.prune import IMPORTANCES, PruneConfig, prune
from compress.quantize import ROUNDINGS, QuantizeConfig, input_sensitivity, qat_finetune, sensitivity
from students.data import Split, load_split, utterance_windows
from students.model import PRESETS, Student, count_params, encode_input, load_student, save_student
from teacher.constants import frame_anchors
from teacher.errors import FacedistillError
from teacher.fsutil import atomic_write_json, sha256_file
from teacher.metrics import evaluate

DEFAULT_RUN = Path("runs/default")
DEFAULT_CALIB = DEFAULT_RUN / "corpus" / "labeled"
DEFAULT_TEST = DEFAULT_RUN / "corpus" / "test"
DEFAULT_BINARIES = DEFAULT_RUN / "binaries"
DEFAULT_STUDENTS = DEFAULT_RUN / "students"


def split_windows(
    split: Split, model: Student, *, part: str, count: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` random windows (+ their target rows) from the even ("calib") or odd ("heldout") utterances.

    Only the picked windows are cut: on the 130-minute pseudo-labeled split, cutting every frame's window first
    would take gigabytes."""
    first = {"calib": 0, "heldout": 1}[part]
    picks = list(range(first, len(split.audio), 2) if len(split.audio) > 1 else range(len(split.audio)))
    if not picks:
        msg = f"split {split.name!r}: no utterances for {part} windows"
        raise FacedistillError(msg)
    frames = np.array([len(split.targets[i]) for i in picks], np.int64)
    offsets = np.concatenate([[0], np.cumsum(frames)])
    idx = np.random.default_rng(seed).permutation(int(offsets[-1]))[:count]
    owner = np.searchsorted(offsets, idx, side="right") - 1  # which picked utterance each window comes from
    x = np.zeros((len(idx), model.window_samples), np.float32)
    y = np.zeros((len(idx), split.targets[picks[0]].shape[1]), np.float32)
    for k in np.unique(owner):
        i, rows = picks[k], np.flatnonzero(owner == k)
        local = idx[rows] - offsets[k]
        anchors = frame_anchors(len(split.targets[i]), split.fps)[local]
        x[rows] = utterance_windows(split.audio[i], anchors, model)
        y[rows] = np.asarray(split.targets[i])[local]
    return x, y


def print_sensitivity(rows: list[dict[str, Any]]) -> None:
    """The table of ``quantize.sensitivity`` / ``input_sensitivity`` rows, one line each."""
    print(f"{'layer':<14}{'params':>10}{'output mse':>14}{'max |Δ|':>11}")
    for r in rows:
        print(f"{r['layer']:<14}{r['params']:>10,}{r['mse']:>14.3g}{r['max_abs_diff']:>11.3g}")


PARALLEL_AFTER_S = 60.0  # evaluate_binary spreads a binary over worker processes when one would take longer


def eval_workers() -> int:
    """Processes ``evaluate_binary`` may use: the CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _run_utterances(path: str, audio: list[np.ndarray], frames: list[int], fps: int, model: Any) -> Any:
    """Outputs of ``path`` over whole utterances, window by window (also the worker of ``evaluate_binary``).

    ``model`` needs only ``left_context``, ``window_samples`` and ``config`` (a pickled stand-in in a worker).
    Returns the outputs, or the refusal message when the runtime cannot run the binary."""
    try:
        return [
            run_binary(path, encode_input(utterance_windows(wav, frame_anchors(n, fps), model), model.config))
            for wav, n in zip(audio, frames)
        ]
    except ExportError as exc:  # returned, not raised: its keyword fields do not survive pickling
        return str(exc)


def evaluate_binary(
    path: str | Path,
    model: Student,
    test: Split,
    *,
    workers: int | None = None,
    parallel_after_s: float = PARALLEL_AFTER_S,
) -> dict[str, Any]:
    """teacher.metrics.evaluate of a binary run window by window over whole test utterances.

    Each window is one single-threaded call, as an engine runs it. A slow binary (the first utterance projects more
    than ``parallel_after_s`` for the split: int16 reference kernels of an a16w8 TFLite ``small`` take ~50 ms a
    window, ~13 min for the test split) is spread over ``workers`` processes (default: every CPU this process may
    use), utterances interleaved; the outputs and metrics are the same."""
    keep = [i for i, truth in enumerate(test.targets) if not np.isnan(truth).any()]
    if not keep:
        msg = f"split {test.name!r}: no utterance has complete ground truth"
        raise FacedistillError(msg)
    frames = [len(test.targets[i]) for i in keep]
    stand_in = SimpleNamespace(
        left_context=model.left_context, window_samples=model.window_samples, config=model.config
    )

    def job(part: list[int]) -> tuple[Any, ...]:
        """``_run_utterances``' arguments for these positions of ``keep``."""
        return str(path), [test.audio[keep[k]] for k in part], [frames[k] for k in part], test.fps, stand_in

    def checked(out: Any) -> list[np.ndarray]:
        if isinstance(out, str):
            raise ExportError(out)
        return out

    start = time.perf_counter()
    preds: list[np.ndarray | None] = [*checked(_run_utterances(*job([0]))), *([None] * (len(keep) - 1))]
    projected = (time.perf_counter() - start) * sum(frames) / frames[0]
    rest = list(range(1, len(keep)))
    workers = min(eval_workers() if workers is None else workers, len(rest))
    if workers > 1 and projected > parallel_after_s:
        parts = [rest[k::workers] for k in range(workers)]
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_run_utterances, *job(part)) for part in parts]
            for part, future in zip(parts, futures):
                for k, y in zip(part, checked(future.result())):
                    preds[k] = y
    elif rest:
        preds[1:] = checked(_run_utterances(*job(rest)))
    truths = [test.targets[i] for i in keep]
    phonemes = [test.phonemes[i] for i in keep]
    return evaluate(preds, truths, phonemes, channel_names=test.channel_names, fps=test.fps)


def _resolve_checkpoint(spec: str, students_dir: Path) -> Path:
    path = Path(spec)
    if path.is_file():
        return path
    if spec in PRESETS:
        path = students_dir / spec / "student.pt"
        if path.is_file():
            return path
        msg = f"{path}: no trained {spec!r} student here (run `compress distill` first, or pass a checkpoint path)"
        raise FacedistillError(msg)
    msg = f"{spec}: neither a checkpoint file nor a preset ({', '.join(PRESETS)})"
    raise FacedistillError(msg)


def _windows(args: argparse.Namespace, model: Student) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    split = load_split(args.calib)
    calib, labels = split_windows(split, model, part="calib", count=args.calib_windows, seed=args.seed)
    heldout, _ = split_windows(split, model, part="heldout", count=args.parity_windows, seed=args.seed + 1)
    return calib, labels, heldout


def _finetune_windows(args: argparse.Namespace, model: Student) -> tuple[np.ndarray, np.ndarray]:
    """Windows (+ label rows) that drive a pruning fine-tune: ``--finetune-windows`` of them from the calibration
    utterances of ``--finetune-data``, or of ``--calib`` when none is given (as ``compress run`` prunes). Before
    stop 22, ``--calib`` alone gave only ``--calib-windows`` (512) and ignored ``--finetune-windows``."""
    source = args.finetune_data if args.finetune_data is not None else args.calib
    split = load_split(source, field="labels" if getattr(args, "label_weight", 0) else None)
    return split_windows(split, model, part="calib", count=args.finetune_windows, seed=args.seed)


def _export(
    model: Student, ckpt: Path, args: argparse.Namespace, *, name: str, dtypes: tuple[str, ...]
) -> list[Path]:
    calib, _, heldout = _windows(args, model)
    test = load_split(args.test, field="truth") if args.test else None
    start = time.time()
    config = ExportConfig(
        formats=tuple(args.formats),
        dtypes=dtypes,
        keep_float=tuple(args.keep_float),
        int8_tolerance=args.int8_tolerance,
        weight_rounding=args.weight_rounding,
    )
    paths, refused = export_each(
        model,
        calib,
        heldout,
        args.out,
        name=name,
        config=config,
        parent_sha256=sha256_file(ckpt),
        quality_fn=None if test is None else (lambda p: evaluate_binary(p, model, test)),
        force=args.force,
    )
    for exc in refused.values():
        print(f"export: {exc}", file=sys.stderr)
    for p in paths:
        print(f"{p}  {p.stat().st_size:,} bytes", file=sys.stderr)
    print(
        f"export: {len(paths)} binaries checked and written in {time.time() - start:.1f} s", file=sys.stderr
    )
    if refused:
        names = ", ".join(f"{name}.{dtype}.{fmt}" for fmt, dtype in refused)
        msg = f"{args.out}: {len(refused)} binaries refused ({names}); the others were written"
        raise ExportError(msg)
    return paths


def cmd_prune(args: argparse.Namespace) -> int:
    ckpt = _resolve_checkpoint(args.checkpoint, args.students_dir)
    model = load_student(ckpt)
    out = Path(args.out) if args.out else ckpt.with_name(f"{ckpt.stem}-pruned{round(args.ratio * 100)}.pt")
    config = PruneConfig(
        ratio=args.ratio,
        importance=args.importance,
        round_to=args.round_to,
        iterative_steps=args.steps,
        finetune_steps=args.finetune_steps,
        label_weight=args.label_weight,
        seed=args.seed,
    )
    calib, labels = _finetune_windows(args, model)
    _, _, heldout = _windows(args, model)
    pruned = prune(model, calib, config=config, labels=labels)
    with torch.no_grad():
        x = torch.from_numpy(heldout)
        drift = float(torch.mean((pruned(x) - model(x)) ** 2))
    save_student(out, pruned, parent_sha256=sha256_file(ckpt), prune_config=config.to_dict())
    card = {
        "artifact": out.name,
        "parent": str(ckpt),
        "parent_sha256": sha256_file(ckpt),
        "prune_config": config.to_dict(),
        "student_config": pruned.config.to_dict(),
        "params_before": count_params(model),
        "params_after": count_params(pruned),
        "heldout_mse_to_unpruned": drift,
        "heldout_windows": len(heldout),
    }
    atomic_write_json(out.with_name(out.name + ".card.json"), card)
    print(
        f"{out}: {card['params_before']:,} -> {card['params_after']:,} params, held-out MSE to unpruned {drift:.3g}"
    )
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    ckpt = _resolve_checkpoint(args.checkpoint, args.students_dir)
    model = load_student(ckpt)
    name = args.name or ckpt.stem
    if args.report_sensitivity:
        calib, _, heldout = _windows(args, model)
        rows = sensitivity(model, calib, heldout)
        floor = input_sensitivity(model, calib, heldout)
        report = Path(args.out) / f"{name}.sensitivity.json"
        atomic_write_json(report, {"parent_sha256": sha256_file(ckpt), "layers": rows, "input": floor})
        print_sensitivity([*rows, floor])
        if floor.get("float_input"):
            tail = "the input stays float, as the log-mel filterbank runs in float"
        else:
            tail = (
                f"the int8 input alone costs max |Δ| {floor['max_abs_diff']:.3g}, which no layer choice removes: "
                "--dtypes a16w8 keeps int8 weights with int16 activations"
            )
        print(f"-> {report} (keep the top layers in float with --keep-float, or try --qat-steps; {tail})")
    if args.qat_steps:
        calib, labels, _ = _windows(args, model)
        config = QuantizeConfig(keep_float=tuple(args.keep_float), qat_steps=args.qat_steps, seed=args.seed)
        model = qat_finetune(model, calib, config=config)
        qat_path = ckpt.with_name(f"{ckpt.stem}-qat.pt")
        save_student(qat_path, model, parent_sha256=sha256_file(ckpt), quantize_config=config.to_dict())
        ckpt, name = qat_path, f"{name}-qat"
        print(f"{qat_path}: QAT-tuned float weights ({args.qat_steps} steps)", file=sys.stderr)
    _export(model, ckpt, args, name=name, dtypes=tuple(args.dtypes))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    ckpt = _resolve_checkpoint(args.checkpoint, args.students_dir)
    _export(load_student(ckpt), ckpt, args, name=args.name or ckpt.stem, dtypes=tuple(args.dtypes))
    return 0


def cmd_ship(args: argparse.Namespace) -> int:
    ckpt = _resolve_checkpoint(args.checkpoint, args.students_dir)
    model = load_student(ckpt)
    name = args.name or (args.checkpoint if args.checkpoint in PRESETS else ckpt.stem)
    if args.ratio > 0:
        pruned_path = ckpt.with_name(f"{ckpt.stem}-pruned{round(args.ratio * 100)}.pt")
        if not pruned_path.is_file() or args.force:
            calib, labels = _finetune_windows(args, model)
            config = PruneConfig(ratio=args.ratio, round_to=args.round_to, finetune_steps=args.finetune_steps)
            save_student(
                pruned_path,
                prune(model, calib, config=config, labels=labels),
                parent_sha256=sha256_file(ckpt),
            )
        ckpt, model, name = pruned_path, load_student(pruned_path), f"{name}-pruned"
    _export(model, ckpt, args, name=name, dtypes=DTYPES)
    return 0


def _csv(kind: tuple[str, ...]):
    def parse(text: str) -> list[str]:
        items = comma_list(text)
        bad = [t for t in items if t not in kind]
        if bad or not items:
            msg = f"choose from {','.join(kind)} (got {text!r})"
            raise argparse.ArgumentTypeError(msg)
        return items

    return parse


def _common(p: argparse.ArgumentParser, *, out_default: Path | None) -> None:
    p.add_argument("checkpoint", help="student checkpoint (.pt from `compress distill`) or a preset name")
    p.add_argument("--students-dir", type=Path, default=DEFAULT_STUDENTS, help="where preset students live")
    p.add_argument(
        "--calib",
        type=Path,
        default=DEFAULT_CALIB,
        help="dataset folder of real audio: even "
        "utterances calibrate int8 ranges / drive fine-tunes, odd ones are held out for parity",
    )
    p.add_argument("--calib-windows", type=int, default=512, help="calibration windows (default 512)")
    p.add_argument("--parity-windows", type=int, default=64, help="held-out windows for parity (default 64)")
    p.add_argument("--seed", type=int, default=0)
    if out_default is not None:
        p.add_argument("--out", type=Path, default=out_default, help=f"output folder (default {out_default})")
        p.add_argument("--formats", type=_csv(FORMATS), default=list(FORMATS), help="onnx,tflite")
        p.add_argument(
            "--keep-float",
            type=comma_list,
            default=[],
            help="comma-separated layers kept float in int8 binaries (e.g. out,head.0)",
        )
        p.add_argument(
            "--test",
            type=Path,
            default=None,
            help="test dataset with ground truth: put quality "
            "metrics (teacher.metrics.evaluate of the binary itself) into every card",
        )
        p.add_argument("--name", default=None, help="binary base name (default: checkpoint stem)")
        p.add_argument("--force", action="store_true", help="rewrite binaries even if up to date")
        p.add_argument("--int8-tolerance", type=float, default=0.02, help="int8 parity limit, max |Δ| (0.02)")
        p.add_argument(
            "--weight-rounding",
            choices=ROUNDINGS,
            default="gptq",
            help="how float weights become int8 in quantized binaries: gptq (default; rounds each layer to "
            "cancel its own error on the calibration windows, about half the max |Δ| of a16w8) or nearest",
        )


def _finetune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--finetune-steps", type=int, default=3000, help="fine-tune steps per round (3000)")
    p.add_argument(
        "--finetune-data",
        type=Path,
        default=None,
        help="dataset folder whose audio drives the pruning fine-tune (default: the --calib audio); large, diverse "
        "audio recovers far more, e.g. runs/default/pseudo (the target is the unpruned model, so no labels needed)",
    )
    p.add_argument(
        "--finetune-windows",
        type=int,
        default=16384,
        help="windows cut from --finetune-data (or --calib) for the fine-tune (16384, as compress run)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "prune",
        help="structured channel pruning + distillation fine-tune of a student",
        description="Remove a fraction of every conv's output channels (Torch-Pruning; the output layer and all "
        "kernels stay), fine-tune the result to match the unpruned student on real audio windows, and save it "
        "as config + state dict (loads with load_student like any student).",
    )
    _common(p, out_default=None)
    p.add_argument("--out", type=Path, default=None, help="output checkpoint (default CKPT-prunedNN.pt)")
    p.add_argument("--ratio", type=float, default=0.5, help="fraction of channels removed per layer (0.5)")
    p.add_argument("--importance", choices=IMPORTANCES, default="magnitude", help="channel scoring")
    p.add_argument("--round-to", type=int, default=8, help="kept channel counts are multiples of this (8)")
    p.add_argument("--steps", type=int, default=1, help="iterative prune + fine-tune rounds (1)")
    _finetune_args(p)
    p.add_argument(
        "--label-weight", type=float, default=0.0, help="weight of the label loss in the fine-tune"
    )
    p.set_defaults(handler=cmd_prune)

    p = subparsers.add_parser(
        "quantize",
        help="quantized binaries (int8, a16w8), a per-layer sensitivity report, optional QAT",
        description="Write quantized binaries: int8 (per-channel int8 weights, int8 activations calibrated on real "
        "windows) and/or a16w8 (the same weights, int16 activations). --report-sensitivity quantizes one layer "
        "at a time and ranks layers by the output error they cause; keep the worst in float with --keep-float, "
        "or adapt the weights with --qat-steps N.",
    )
    _common(p, out_default=DEFAULT_BINARIES)
    quantized = tuple(d for d in DTYPES if d != "fp32")
    p.add_argument("--dtypes", type=_csv(quantized), default=["int8"], help="int8 (default), a16w8, or both")
    p.add_argument(
        "--report-sensitivity", action="store_true", help="write NAME.sensitivity.json and print it"
    )
    p.add_argument(
        "--qat-steps", type=int, default=0, help="quantization-aware fine-tune steps before export"
    )
    p.set_defaults(handler=cmd_quantize)

    p = subparsers.add_parser(
        "export",
        help="ONNX / TFLite binaries (fp32, int8, a16w8) with parity checks and model cards",
        description="Export a student with a fixed [1, window] input, run each binary in its runtime on held-out "
        "windows, refuse any that drifts (fp32 max|Δ| > 1e-4, int8 and a16w8 > 0.02) or whose quantized weights "
        "stayed float, and write NAME.DTYPE.FORMAT plus NAME.DTYPE.FORMAT.card.json. a16w8 = int8 weights, int16 "
        "activations (TFLite 16x8).",
    )
    _common(p, out_default=DEFAULT_BINARIES)
    p.add_argument("--dtypes", type=_csv(DTYPES), default=list(DTYPES), help="fp32,int8,a16w8")
    p.set_defaults(handler=cmd_export)

    p = subparsers.add_parser(
        "ship",
        help="prune + quantize + export one student (preset or checkpoint)",
        description="The whole compression stage for one student: prune (--ratio, 0 to skip), then export fp32 and "
        "quantized (int8, a16w8) ONNX/TFLite binaries with parity checks and cards. Reruns skip work already done.",
    )
    _common(p, out_default=DEFAULT_BINARIES)
    p.add_argument("--ratio", type=float, default=0.5, help="pruning ratio (0 = no pruning)")
    p.add_argument("--round-to", type=int, default=8, help="kept channel counts are multiples of this (8)")
    _finetune_args(p)
    p.set_defaults(handler=cmd_ship)
