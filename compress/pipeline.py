"""`compress run`: the whole method on the embedded default, one stage after another, each resumable.

corpus -> teacher -> teacher eval -> pseudo-labels -> hybrid distillation -> prune / quantize / export (windowed
and streaming binaries) -> profile against the device budgets -> report. Every stage writes its artifact plus a
JSON card under ``workdir`` and is skipped when that artifact is already there with the same config, so a rerun
after an interruption (or a crash) resumes where it stopped. ``RunConfig.quick`` runs the same code at toy size.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compress.cmd_compress import evaluate_binary, split_windows
from compress.cmd_profile import run_profile
from compress.export import ExportConfig, ExportError, export
from compress.prune import PruneConfig, prune
from compress.quantize import QuantizeConfig, qat_finetune, sensitivity
from compress.report import (
    ROUND2_PSEUDO_DIR,
    ROUND2_TEACHER_DIR,
    TEACHER_DIR,
    collect_results,
    save_example,
    write_report,
)
from compress.stream_export import export_streaming
from students.data import load_split
from students.distill import DEFAULT_PRESETS, DistillConfig, distill, resolve_device
from students.model import load_student, save_student, saved_with
from teacher.constants import SUPPORTED_FPS, frame_anchors
from teacher.corpus import CorpusConfig, build_corpus
from teacher.dataset import Dataset
from teacher.errors import FacedistillError
from teacher.features import resample_curves
from teacher.fsutil import atomic_write_json, config_matches, sha256_file, sweep_stale_temps
from teacher.label import LabelConfig, pseudo_label
from teacher.metrics import evaluate
from teacher.model import Teacher
from teacher.train import TeacherTrainConfig, evaluate_teacher, train_teacher

RUN_VERSION = 1
RETRY_MARGIN = 1.5  # retry a refused int8 binary with float layers only when max |Δ| <= 1.5 x the gate


@dataclass(frozen=True)
class RunConfig:
    """What `compress run` builds; saved as ``run_config.json`` in the work folder."""

    version: int = RUN_VERSION
    quick: bool = False
    seed: int = 0
    teacher_epochs: int | None = None  # None: the teacher's default (quick: 6)
    labeled_languages: tuple[str, ...] | None = None  # None: the corpus default (teacher.corpus._labeled)
    # >1: the teacher is an ensemble of that many decoders (compress teacher train --ensemble;
    # reports/bench/teacher_ensemble.txt). 1 keeps the reference run's single teacher.
    teacher_members: int = 1
    # >0: self-training. A round-2 teacher (same config, this many epochs, one augmented copy per clip) learns the
    # labeled split plus the round-1 pseudo-labels, then relabels the unlabeled split; students distil from
    # round 2 (teacher2/, pseudo2/). 0 keeps round 1 (README §5; reports/bench/teacher_selftrain_layers246.txt).
    self_train_epochs: int = 0
    # >0: the rate the teacher's decoder runs at (compress teacher train --fps; 0 = the corpus's 30 fps). Its
    # curves are resampled to the corpus's rate for the pseudo-labels and the metrics.
    teacher_fps: int = 0
    # small-mulaw (stage 2, from small's weights) is small reading mu-law audio: the full-int8 small (int8 input and
    # activations), which linear-audio small cannot be (README §8)
    presets: tuple[str, ...] = (*DEFAULT_PRESETS, "small-mulaw")
    ship: tuple[str, ...] = (
        "tiny",
        "tiny-mel",
        "realtime",
        "realtime-mel",
        "edge",
        "edge-mulaw",
        "edge-mel",
        "causal",
        "causal-mel",
        "small",
        "small-mulaw",
    )  # exported as binaries
    # preset -> ratio of channels removed. tiny at 30 %: its a16w8 binary is well inside the 0.25 MB target either
    # way, and 50 % cost +12.3 % test MSE in the stop-13 reference run, over the 10 % limit. tiny-mel at 30 %: its
    # full-int8 binary (int8 activations; the filterbank's weights stored int8) is the one aimed at the 0.25 MB target.
    # small at 5 % (11 % of its parameters): its int8-weight binaries go under 1/4 of the fp32 bytes (0.224x at
    # -0.4 % test MSE, reports/bench/compress_small_pruned.txt)
    prune: dict[str, float] = field(
        default_factory=lambda: {"tiny": 0.3, "tiny-mel": 0.3, "small": 0.05, "small-mulaw": 0.05}
    )
    # preset -> fine-tune steps after pruning (others: PRUNE_FINETUNE_STEPS). A 5 % cut of small needs few, and
    # each of its steps costs ~10x one of tiny's: 500 recovered it fully in the benchmark above
    prune_steps: dict[str, int] = field(default_factory=lambda: {"small": 500, "small-mulaw": 500})
    # preset -> QAT steps: a "<preset>-qat" variant (fake-quantized fine-tune towards its float self on
    # pseudo-labeled audio) is shipped as int8. In the stop-14 reference run (reports/summary.json) edge-mulaw's
    # int8 TFLite passed parity at 0.017 without QAT and 0.014 with it, each with frontend.1 kept float.
    qat: dict[str, int] = field(default_factory=lambda: {"edge-mulaw": 1000})
    streaming: tuple[str, ...] = ("tiny", "realtime", "realtime-mel")
    budgets: tuple[str, ...] = ("paper-tiny", "mobile", "wearable")
    calib_windows: int = 512
    parity_windows: int = 64
    profile_runs: int = 1000
    max_keep_float: int = 2  # int8 binaries may keep this many of their most sensitive layers in float

    def __post_init__(self) -> None:
        for key in ("presets", "ship", "streaming", "budgets"):
            object.__setattr__(self, key, tuple(getattr(self, key)))
        if self.labeled_languages is not None:
            object.__setattr__(self, "labeled_languages", tuple(self.labeled_languages))
        missing = [
            p
            for p in (*self.ship, *self.prune, *self.prune_steps, *self.streaming, *self.qat)
            if p not in self.presets
        ]
        if missing:
            msg = f"run config: presets {missing} are shipped/pruned/streamed/QAT-tuned but not distilled"
            raise FacedistillError(msg)
        if self.teacher_fps and self.teacher_fps not in SUPPORTED_FPS:
            msg = f"run config: teacher_fps must be 0 (the corpus's rate) or one of {SUPPORTED_FPS}"
            raise FacedistillError(msg)
        if self.teacher_members < 1 or self.self_train_epochs < 0:
            msg = "run config: teacher_members must be >= 1 and self_train_epochs >= 0"
            raise FacedistillError(msg)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        return cls(**d)

    @classmethod
    def quick_config(cls, **overrides: Any) -> RunConfig:
        """Toy sizes: every stage runs, fewer binaries are shipped (the export/convert step dominates)."""
        full = cls()
        # small-mulaw is the full run's full-int8 small and the *-mel presets other than tiny-mel are tiny-mel's
        # frontend at other windows: at toy size they would only add small's and tiny-mel's cost again
        presets = tuple(
            p for p in full.presets if p not in ("small-mulaw", "realtime-mel", "edge-mel", "causal-mel")
        )
        return cls(
            **{
                "quick": True,
                # edge-mulaw: the mu-law input + QAT int8 path end to end; tiny-mel: a log-mel frontend kept float
                "ship": ("tiny", "tiny-mel", "edge-mulaw"),
                "presets": presets,
                "prune": {k: v for k, v in full.prune.items() if k in presets},
                "prune_steps": {k: v for k, v in full.prune_steps.items() if k in presets},
                "streaming": ("tiny",),
                "profile_runs": 200,
                "max_keep_float": 1,
                **overrides,
            }
        )


def _stage(name: str) -> float:
    print(f"\n=== compress run: {name} ===", file=sys.stderr, flush=True)
    return time.time()


def _done(name: str, start: float, timings: dict[str, float]) -> None:
    timings[name] = round(time.time() - start, 1)
    print(f"=== {name}: {timings[name]:.1f} s ===", file=sys.stderr, flush=True)


def run_pipeline(
    workdir: str | Path, reports_dir: str | Path, *, config: RunConfig = RunConfig(), device: str = "cpu"
) -> dict:
    """Run (or resume) every stage into ``workdir`` and write the report to ``reports_dir``; returns the summary.

    ``device`` is where the students train (``students.distill.resolve_device``); not part of ``config``. It is
    checked first, so a device that is not there is refused before any stage runs."""
    resolve_device(device)
    work, reports = Path(workdir), Path(reports_dir)
    work.mkdir(parents=True, exist_ok=True)
    saved = work / "run_config.json"
    # a folder saved before an option existed matches at that option's default (finished stages stay valid)
    if saved.is_file() and not config_matches(
        config, json.loads(saved.read_text()), (FacedistillError, TypeError)
    ):
        msg = (
            f"{saved}: this work folder was made with another run config; use another --workdir or delete it"
        )
        raise FacedistillError(msg)
    # the corpus config is checked (e.g. --labeled-languages) before the run config is saved: a typo must not pin
    # the folder to a config that can never run
    corpus_config = CorpusConfig.quick(seed=config.seed) if config.quick else CorpusConfig(seed=config.seed)
    if config.labeled_languages:
        corpus_config = replace(
            corpus_config, labeled=replace(corpus_config.labeled, languages=config.labeled_languages)
        )
    atomic_write_json(saved, config.to_dict())
    swept = sweep_stale_temps(work)
    if swept:
        print(f"compress run: removed {swept} temp file(s) a killed run left in {work}", file=sys.stderr)
    torch.manual_seed(config.seed)
    timings: dict[str, float] = {}
    t_all = time.time()

    corpus = work / "corpus"
    t = _stage("corpus")
    build_corpus(corpus, config=corpus_config)
    _done("corpus", t, timings)

    teacher_dir = work / TEACHER_DIR
    t = _stage("teacher")
    tconfig = TeacherTrainConfig(seed=config.seed)
    if config.quick:
        tconfig = replace(tconfig, epochs=6, augment_variants=1)
    if config.teacher_epochs:
        tconfig = replace(tconfig, epochs=config.teacher_epochs)
    if config.teacher_members > 1:
        tconfig = replace(tconfig, model=replace(tconfig.model, members=config.teacher_members))
    if config.teacher_fps:
        tconfig = tconfig.at_fps(config.teacher_fps)
    train_teacher(corpus / "labeled", teacher_dir, config=tconfig, eval_dir=corpus / "test")
    teacher = Teacher.load(teacher_dir)
    _done("teacher", t, timings)

    pseudo = work / "pseudo"
    t = _stage("pseudo-labels")
    pseudo_label(corpus / "unlabeled", pseudo, teacher=teacher, config=LabelConfig())
    _done("pseudo-labels", t, timings)

    if config.self_train_epochs:
        # round 2: the round-1 labels join the ground truth; everything downstream uses round 2
        t = _stage("self-training")
        teacher_dir = work / ROUND2_TEACHER_DIR
        round2 = replace(
            tconfig, epochs=config.self_train_epochs, augment_variants=min(1, tconfig.augment_variants)
        )
        train_teacher(
            corpus / "labeled", teacher_dir, config=round2, eval_dir=corpus / "test", pseudo_dir=pseudo
        )
        teacher = Teacher.load(teacher_dir)
        pseudo = work / ROUND2_PSEUDO_DIR
        pseudo_label(corpus / "unlabeled", pseudo, teacher=teacher, config=LabelConfig())
        _done("self-training", t, timings)

    t = _stage("teacher eval")
    eval_path = teacher_dir / "metrics.json"
    if not _fresh(eval_path, teacher.identity):
        metrics = {
            "test": evaluate_teacher(teacher, corpus / "test"),
            "unlabeled": _pseudo_label_quality(pseudo, teacher),
        }
        atomic_write_json(eval_path, {"teacher": teacher.identity, "metrics": metrics})
    _done("teacher eval", t, timings)

    students_dir = work / "students"
    t = _stage("distillation")
    dconfig = DistillConfig(presets=config.presets, seed=config.seed)
    if config.quick:
        dconfig = dconfig.quick()
    distill(
        pseudo,
        students_dir,
        config=dconfig,
        labeled_dir=corpus / "labeled",
        test_dir=corpus / "test",
        device=device,
    )
    _done("distillation", t, timings)

    binaries = work / "binaries"
    t = _stage("prune / quantize / export")
    # int8 calibration, parity checks and pruning/QAT fine-tunes all use the pseudo-labeled audio (even utterances
    # calibrate, odd ones are held out): 130 minutes of many voices, languages and recording conditions. Calibrated
    # on the 10-minute labeled split, every full-int8 tiny-mel binary of the stop-20 reference run was refused
    # (max |delta| 0.062-0.115); on this audio its pruned tiny-mel passed at 0.014
    # (reports/bench/tiny_mel_int8_calibration.txt).
    calib_split = load_split(pseudo, field=None)
    test_split = load_split(corpus / "test", field="truth")
    refusals: list[dict[str, Any]] = []
    for name in config.ship:
        ckpt = students_dir / name / "student.pt"
        variants = [(name, ckpt, False, False)]
        if name in config.prune:
            steps = config.prune_steps.get(name, PRUNE_FINETUNE_STEPS)
            pruned_ckpt = _pruned(ckpt, config.prune[name], calib_split, config, steps)
            variants.append((f"{name}-pruned", pruned_ckpt, True, False))
        if name in config.qat:
            qat_ckpt = _qat(ckpt, config.qat[name], calib_split, config)
            variants.append((f"{name}-qat", qat_ckpt, False, True))
        for label, path, pruned, qat in variants:
            refusals += _ship_one(
                load_student(path),
                path,
                label,
                binaries,
                calib_split,
                test_split,
                config,
                extra={"preset": name, "pruned": pruned, "qat": qat, "streaming": False},
                dtypes=("int8",) if qat else ("fp32", "int8", "a16w8"),
            )
    refusals += _export_streaming(students_dir, binaries, calib_split, config)
    _done("prune / quantize / export", t, timings)

    t = _stage("profile")
    profile_json = work / "profile" / "binaries.json"
    all_binaries = sorted(p for p in binaries.iterdir() if p.suffix in (".onnx", ".tflite"))
    args = argparse.Namespace(
        binaries=[str(p) for p in all_binaries],
        budget=",".join(config.budgets),
        budgets=None,
        runs=config.profile_runs,
        warmup=50,
        json=profile_json,
    )
    verdict = run_profile(
        args
    )  # prints the tables; 1 = some binary is over some budget (reported, not fatal)
    _done("profile", t, timings)

    t = _stage("report")
    _save_example(work, teacher, students_dir, corpus)
    results = collect_results(work)
    results["teacher"].update(_teacher_size_and_latency(teacher, corpus / "test"))
    results["run"] = {
        "config": config.to_dict(),
        "stage_seconds": timings,
        "total_seconds": round(time.time() - t_all, 1),
        "budget_gate": "pass" if verdict == 0 else "some binaries over budget",
        "refused_binaries": refusals,
        "teacher_eval": json.loads(eval_path.read_text())["metrics"],
    }
    write_report(work, reports, results=results)
    _done("report", t, timings)
    print(
        f"compress run: done in {time.time() - t_all:.0f} s; report in {reports}/REPORT.md", file=sys.stderr
    )
    return results


def _pseudo_label_quality(pseudo: Path, teacher: Teacher) -> dict:
    """The teacher's pseudo-labels against the unlabeled split's held-back ground truth (no second teacher pass)."""
    ds = Dataset(pseudo)
    utts = [u for u in ds if u.truth is not None and u.labels is not None]
    if not utts:
        msg = f"{pseudo}: pseudo-labels carry no ground truth to evaluate against"
        raise FacedistillError(msg)
    return evaluate(
        [u.labels for u in utts],
        [u.truth for u in utts],
        [u.phonemes for u in utts],
        channel_names=ds.channel_names,
        fps=ds.fps,
        mean_vector=teacher.label_mean,
    )


def _teacher_size_and_latency(teacher: Teacher, test_dir: Path, n_utterances: int = 8) -> dict[str, Any]:
    """Params and bytes with the frozen Whisper encoder included (as stored: fp16 in model.bin), and the compute
    per output frame of whole-utterance prediction (encoder + decoder, this machine, its default threads)."""
    size = teacher.size()
    encoder_params = size.get("encoder_params", 0)
    ds = Dataset(test_dir)
    utts = [u for _, u in zip(range(n_utterances), ds)]
    per_frame = []
    for utt in utts:
        start = time.perf_counter()
        teacher.predict_batch([utt.audio])
        # per frame at the corpus's rate, the rate its curves are delivered at (a 60 fps teacher's are resampled)
        per_frame.append(1000 * (time.perf_counter() - start) / utt.n_frames(ds.fps))
    return {
        "params": size["decoder_params"] + encoder_params,
        "bytes": size["decoder_bytes_fp32"] + 2 * encoder_params,
        "size_note": "decoder fp32 + Whisper-base encoder fp16 as stored in model.bin "
        f"({encoder_params:,} encoder params)",
        "latency_ms": {"median": float(np.median(per_frame)), "p99": float(np.percentile(per_frame, 99))},
        "latency_note": f"whole-utterance prediction / frames, {len(utts)} test utterances",
    }


def _fresh(path: Path, identity: str) -> bool:
    return path.is_file() and json.loads(path.read_text()).get("teacher") == identity


def _with_fallback(write, label: str, fmt: str, rank, max_keep: int) -> dict[str, Any] | None:
    """Write one int8 binary via ``write(keep_float)``; on a parity/dtype refusal retry with the most
    quantization-sensitive layers (``rank()``, computed once) kept in float, up to ``max_keep`` of them, as long as
    the miss is within ``RETRY_MARGIN`` x the tolerance (a far miss is not fixed by one float layer, and every retry
    is a full conversion). Returns a refusal record when it stays refused (nothing is written then), else None."""
    keep: tuple[str, ...] = ()
    while True:
        try:
            write(keep)
            return None
        except ExportError as exc:
            near = exc.max_abs_diff is not None and exc.max_abs_diff <= RETRY_MARGIN * exc.tolerance
            if len(keep) >= max_keep or not near:
                print(f"compress run: {exc}", file=sys.stderr)
                return {"binary": f"{label}.int8.{fmt}", "error": str(exc), "keep_float": list(keep)}
            keep = tuple(rank()[: len(keep) + 1])
            print(
                f"compress run: {label} int8 {fmt} refused; retrying with {list(keep)} in float",
                file=sys.stderr,
            )


def _ranker(model, calib, held):
    """Layers by int8 sensitivity, computed on first use; ``calib()`` / ``held()`` make the windows it needs."""
    cache: list[str] = []

    def rank() -> list[str]:
        if not cache:  # (sensitivity leaves out what stays float anyway: a log-mel filterbank)
            cache.extend(row["layer"] for row in sensitivity(model, calib(), held()))
        return cache

    return rank


def _ship_one(
    model,
    ckpt: Path,
    label: str,
    binaries: Path,
    calib_split,
    test_split,
    config: RunConfig,
    *,
    extra: dict[str, Any],
    dtypes: tuple[str, ...] = ("fp32", "int8", "a16w8"),
) -> list[dict[str, Any]]:
    """Export ``dtypes`` (fp32, int8, a16w8) ONNX/TFLite of one windowed student (int8 with the keep-float
    fallback)."""
    calib, _ = split_windows(calib_split, model, part="calib", count=config.calib_windows, seed=config.seed)
    held, _ = split_windows(
        calib_split, model, part="heldout", count=config.parity_windows, seed=config.seed + 1
    )
    common = dict(
        parent_sha256=sha256_file(ckpt),
        quality_fn=lambda p: evaluate_binary(p, model, test_split),
        extra=extra,
    )
    rank = _ranker(model, lambda: calib, lambda: held)
    refusals = []
    for fmt in ("onnx", "tflite"):
        if "fp32" in dtypes:
            export(
                model,
                calib,
                held,
                binaries,
                name=label,
                config=ExportConfig(formats=(fmt,), dtypes=("fp32",)),
                **common,
            )

        def write(keep, fmt=fmt):
            config_ = ExportConfig(formats=(fmt,), dtypes=("int8",), keep_float=keep)
            export(model, calib, held, binaries, name=label, config=config_, **common)

        refusal = _with_fallback(write, label, fmt, rank, config.max_keep_float) if "int8" in dtypes else None
        if refusal:
            refusals.append(refusal)
        if "a16w8" in dtypes:
            a16 = ExportConfig(formats=(fmt,), dtypes=("a16w8",))
            refusals += _a16w8(
                lambda a16=a16: export(model, calib, held, binaries, name=label, config=a16, **common),
                f"{label}.a16w8.{fmt}",
            )
    return refusals


def _a16w8(write, binary: str) -> list[dict[str, Any]]:
    """Write one a16w8 binary (int8 weights, int16 activations: no int8 input floor, so no keep-float retries);
    returns [] or a one-item refusal list."""
    try:
        write()
        return []
    except ExportError as exc:
        print(f"compress run: {exc}", file=sys.stderr)
        return [{"binary": binary, "error": str(exc), "keep_float": []}]


PRUNE_FINETUNE_WINDOWS, PRUNE_FINETUNE_STEPS = 16384, 3000  # a pruned student's fine-tune (full-size runs)


def pruned_path(ckpt: Path, ratio: float) -> Path:
    """Where ``compress run`` keeps the ``ratio``-pruned, fine-tuned child of the student ``ckpt``."""
    return ckpt.with_name(f"student-pruned{round(ratio * 100)}.pt")


def _pruned(
    ckpt: Path, ratio: float, audio_split, config: RunConfig, steps: int = PRUNE_FINETUNE_STEPS
) -> Path:
    """Prune ``ckpt`` and fine-tune it against its unpruned self on windows of ``audio_split`` (the pseudo-labeled
    audio: large and diverse; its labels are not used). Windows of the small labeled split recover far less
    (tiny, 50 %, test MSE vs unpruned: +42 % in bench_compress at a859a2e, 300 steps on labeled windows; +8.7 %
    with these settings at 6cf0582). The stop-14 reference run's 30 % pruned tiny: +6.7 % (reports/)."""
    out = pruned_path(ckpt, ratio)
    count, steps = (512, 40) if config.quick else (PRUNE_FINETUNE_WINDOWS, steps)
    pconfig = PruneConfig(ratio=ratio, round_to=4, finetune_steps=steps)
    # reused only if made from the same parent with the same pruning, fine-tune and windows
    made = {"parent_sha256": sha256_file(ckpt), "windows": count, "seed": config.seed}
    if saved_with(out, configs={"prune_config": pconfig}, **made):
        return out
    model = load_student(ckpt)
    windows, _ = split_windows(audio_split, model, part="calib", count=count, seed=config.seed)
    save_student(out, prune(model, windows, config=pconfig), prune_config=pconfig.to_dict(), **made)
    return out


def _qat(ckpt: Path, steps: int, audio_split, config: RunConfig) -> Path:
    """QAT-tune ``ckpt`` (``compress.quantize.qat_finetune``: int8 fake quantization, self-distillation towards its
    float outputs) on windows of ``audio_split`` (the pseudo-labeled audio; labels unused). Saved beside it as
    ``student-qat.pt`` with the parent's hash and settings, and reused while both match."""
    out = ckpt.with_name("student-qat.pt")
    count, steps = (256, min(steps, 20)) if config.quick else (4096, steps)
    qconfig = QuantizeConfig(qat_steps=steps, seed=config.seed)
    made = {"parent_sha256": sha256_file(ckpt), "quantize_config": qconfig.to_dict(), "windows": count}
    if saved_with(out, **made):
        return out
    model = load_student(ckpt)
    windows, _ = split_windows(audio_split, model, part="calib", count=count, seed=config.seed)
    save_student(out, qat_finetune(model, windows, config=qconfig), **made)
    return out


def _export_streaming(
    students_dir: Path, binaries: Path, calib_split, config: RunConfig
) -> list[dict[str, Any]]:
    """Streaming (state-carrying) binaries: calibrated on even utterances, parity on ~10 s of odd ones."""
    calib_audio = list(calib_split.audio[0::2][:32])
    heldout = np.concatenate(list(calib_split.audio[1::2][:4]))
    refusals = []
    for name in config.streaming:
        ckpt = students_dir / name / "student.pt"
        model = load_student(ckpt)
        common = dict(
            parent_sha256=sha256_file(ckpt), extra={"preset": name, "pruned": False, "streaming": True}
        )
        rank = _ranker(  # windows are only cut if an int8 export misses and needs the ranking
            model,
            lambda model=model: split_windows(calib_split, model, part="calib", count=128, seed=config.seed)[
                0
            ],
            lambda model=model: split_windows(
                calib_split, model, part="heldout", count=64, seed=config.seed + 1
            )[0],
        )
        for fmt in ("onnx", "tflite"):
            fp32 = ExportConfig(formats=(fmt,), dtypes=("fp32",), fp32_tolerance=1e-5)
            export_streaming(model, calib_audio, heldout, binaries, name=name, config=fp32, **common)

            def write(keep, fmt=fmt, model=model, common=common, name=name):
                config_ = ExportConfig(formats=(fmt,), dtypes=("int8",), keep_float=keep)
                export_streaming(model, calib_audio, heldout, binaries, name=name, config=config_, **common)

            refusal = _with_fallback(write, f"{name}.stream", fmt, rank, config.max_keep_float)
            if refusal:
                refusals.append(refusal)
            a16 = ExportConfig(formats=(fmt,), dtypes=("a16w8",))
            refusals += _a16w8(
                lambda a16=a16, model=model, common=common, name=name: export_streaming(
                    model, calib_audio, heldout, binaries, name=name, config=a16, **common
                ),
                f"{name}.stream.a16w8.{fmt}",
            )
    return refusals


def _save_example(work: Path, teacher: Teacher, students_dir: Path, corpus: Path) -> None:
    """One test utterance's audio and curves (ground truth, teacher, students) for the plots and the video."""
    ds = Dataset(corpus / "test")
    utt = next(u for u in ds if u.truth is not None and u.meta.get("language") not in ("en-us",))
    truth = utt.truth
    curves = {"ground truth": truth}
    pred = teacher.predict_batch([utt.audio])[0]
    curves["teacher"] = resample_curves(pred, teacher.fps, len(truth), ds.fps)
    anchors = torch.from_numpy(frame_anchors(len(truth), ds.fps))
    for name in ("tiny", "realtime"):
        if (students_dir / name / "student.pt").is_file():
            model = load_student(students_dir / name / "student.pt")
            with torch.no_grad():
                curves[f"student {name}"] = model.forward_full(torch.from_numpy(utt.audio)[None], anchors)[
                    0
                ].numpy()
    save_example(
        work / "example.npz",
        utterance=utt.id,
        audio=utt.audio,
        fps=ds.fps,
        channel_names=ds.channel_names,
        curves_by_label={k: np.asarray(v, np.float32) for k, v in curves.items()},
    )
