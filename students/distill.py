"""Hybrid distillation: teacher pseudo-labels -> ``small``; then ``small`` becomes a second teacher for the rest.

Stage 1 trains the stage-1 preset (``small``) on the big teacher's pseudo-labels of the unlabeled split with
reconstruction (MSE) + velocity (MSE of frame-to-frame differences) losses. Stage 2 freezes it and trains every
other preset on the same pseudo-labels plus a *feature loss*: chosen intermediate CNN features of the student,
mapped by a learned 1x1 conv adapter where widths differ, regress the frozen ``small``'s features of the same
layer (MSE normalised by the teacher feature's mean square). The ground-truth loss on the labeled split applies at
every stage. Defaults follow bench/bench_distill.py on the default corpus: ground truth on (weight 0.2), feature
loss off (``feature_weight`` 0: it was neutral or worse at every weight tried); ``realtime`` still starts from the
frozen ``small``'s weights (same layers), so stage 2 keeps a use for it.

Time alignment of features: both networks run over the very same chunk, and every feature sits on the 64-sample
grid, position ``q`` covering chunk samples ``[64 q, 64 q + RF)`` (RF = that layer's receptive field, see
``Student.feature_receptive_field``). Features are matched at equal receptive-field *centres*
``64 q + RF / 2``: student position ``q`` pairs with teacher position ``q + (RF_student - RF_teacher) / 128``
(always a whole number, since both RFs are 64 x an odd number). Presets with other past/future windows (e.g.
``realtime``) therefore match on time, not on their window position; each chunk carries the larger of the two
models' contexts so both read real audio.

Training is a fixed number of steps per preset (reproducible; steps chosen to fit the time budget), resumable
from periodic atomic checkpoints, and runs unchanged under ``torchrun --nproc_per_node=N`` (gloo DDP: each rank
draws different chunks, rank 0 writes).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from students.data import Batch, ChunkSampler, Split, evaluate_student, load_split, merge_splits
from students.model import (
    ANCHOR_QUANTUM,
    PRESETS,
    Student,
    StudentConfig,
    describe,
    load_student,
    preset,
    save_student,
)
from teacher.constants import LIP_CLOSURE_CHANNEL
from teacher.dataset import MANIFEST, DatasetError
from teacher.errors import FacedistillError
from teacher.fsutil import atomic_torch_save, atomic_write_json, config_matches
from teacher.train import closure_channel, closure_hinge, closure_weights

DISTILL_VERSION = 2  # 2: freq_masks defaults to 2 (version-1 configs trained without masks)
PROGRESS_FORMAT = "facedistill-distill-progress"

# Steps per preset of the default run. Measured on 2 idle cores (batch 8 x 1 s chunks, 2 threads): small 0.146,
# tiny 0.035, edge 0.026, causal 0.033, realtime 0.293 s/step (stage 2 includes the frozen small's feature pass)
# -> ~13 min of training in all. Step count is the lever that matters: on truth labels, 300/600/1500 steps of
# tiny gave about 0.81/0.68/0.58 x the mean-predictor MSE, while lr, batch shape, loss weighting, init, strides
# and dilations moved it by <= 0.05 at equal steps; so the cheap presets get many steps.
DEFAULT_STEPS = {
    "small": 1500,
    "tiny": 4000,
    # warm-started from small (factorized head). 600 steps (the default before stop 24) left it undertrained: on
    # the v2 corpus's single-teacher labels 2 400 steps took test MSE / mean 0.480 -> 0.412 and lip closure 0.51 ->
    # 0.61 (README, stop-24 results); 4 000 steps -> 0.397 and 0.65 (reports/bench/students_teacher_and_steps.txt)
    "realtime": 4000,
    "edge": 4000,
    "edge-mulaw": 4000,
    "tiny-mel": 4000,
    # the log-mel presets at other windows get tiny-mel's steps (reports/bench/mel_presets.txt)
    "realtime-mel": 4000,
    "edge-mel": 4000,
    "causal-mel": 4000,
    "causal": 4000,
    # warm-started from the trained small (in `compress run` since stop 28, not in DistillConfig's own default
    # presets). 600 steps left it 9 % above linear small's test MSE; 2 400 closed the gap (stop 23, README §8)
    "small-mulaw": 2400,
}


# what `compress distill` trains by default (`compress run` adds small-mulaw)
DEFAULT_PRESETS = (
    "small",
    "tiny",
    "tiny-mel",
    "realtime",
    "realtime-mel",
    "edge",
    "edge-mulaw",
    "edge-mel",
    "causal",
    "causal-mel",
)


class DistillError(FacedistillError, ValueError):
    """A distillation that cannot run as configured (missing inputs, a stale checkpoint, bad settings)."""


# DistillConfig fields that only change how a log-mel student trains (a waveform student ignores them)
LOGMEL_ONLY = ("freq_warp", "freq_masks", "freq_mask_bands", "freq_eq_db")


@dataclass(frozen=True)
class DistillConfig:
    """Everything that decides a distillation run; saved with every checkpoint and card."""

    version: int = DISTILL_VERSION
    presets: tuple[str, ...] = DEFAULT_PRESETS
    stage1: str = "small"  # trained on pseudo-labels alone, then the frozen second teacher
    steps: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_STEPS))
    default_steps: int = 600  # for presets missing from ``steps``
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-preset StudentConfig fields
    batch_size: int = 8  # chunks per step and rank
    chunk_frames: int = 30  # rig frames per chunk (1 s at 30 fps)
    lr: float = 2e-3  # Adam; 20 warm-up steps then cosine decay to 10 %
    grad_clip: float = 1.0
    # decoupled weight decay (AdamW, Loshchilov & Hutter 2019) per step, scaled by the learning rate; 0 = plain Adam
    weight_decay: float = 0.0
    seed: int = 0
    velocity_weight: float = 1.0
    # Extra reconstruction weight on the lip-closure channel (mouthClose), as in the teacher's loss: closures
    # are short peaks that an MSE-trained student otherwise smooths under the lip-closure threshold.
    # bench/bench_distill.py measures 0 vs the default (reports/bench/distill.txt, tiny, pseudo + GT, 1000 steps,
    # test split: lip closure 0.35 -> 0.47 at MSE / mean 0.577 -> 0.584).
    closure_weight: float = 3.0
    # Closure hinge (teacher.train.closure_hinge): on frames where the target's closure channel passes the
    # lip-closure threshold, a squared hinge pulls the student's up to min(target, threshold + ``closure_margin``).
    # MSE alone shrinks short peaks under the threshold. It trades curve error for closures, so it is off by
    # default (reports/bench/closure_hinge.txt, tiny-mel, 4000 steps, test split: W 0.01 -> lip closure
    # 0.71 -> 0.78 at MSE / mean 0.470 -> 0.487).
    closure_hinge_weight: float = 0.0
    closure_margin: float = 0.1
    # Feature loss against the stage-1 student. Off by default: on the default corpus every weight tried was
    # neutral or worse for tiny at equal steps (reports/bench/distill.txt, 1000 steps, test MSE / mean: pseudo + GT
    # 0.630, + feature weight 0.001 -> 0.657, 0.1 -> 0.829); bench/bench_distill.py measures it on every run.
    feature_weight: float = 0.0
    match: tuple[str, ...] = ("frontend.2", "context.1")  # layers matched against the stage-1 student
    feature_chunks: int = 2  # chunks per step given the feature loss (the stage-1 encoder pass is the cost)
    labeled_weight: float = 0.2  # ground-truth loss on labeled (bench_distill, tiny: 0.667 -> 0.630)
    augment_labeled: bool = True  # gain + noise on labeled chunks
    checkpoint_every: int = 100
    warm_start: bool = True  # stage 2: start from stage-1 weights (Student.warm_start_from)
    # A student trained from scratch starts with its output layer's weights at zero (its output is then the target
    # mean), instead of PyTorch's random init. With random init the head's ReLUs die in the first few steps, most
    # of all with wide windows: the fastest way to cut the random head's output noise is to switch its units off,
    # and dead units get no gradient back (tiny-mel with 1 s of past: all 40 dead by step 10 and a mean predictor;
    # the reference small: 41 of 80 dead). Off by default until a reference run measures it.
    zero_out_init: bool = False
    # Exponential moving average of the student's weights (Polyak averaging), decay per step; 0 = off. The student
    # saved is the average, which smooths the last steps' noise (warm-up: the decay is min(ema_decay,
    # (1 + step) / (10 + step))). Checkpointed with the run, so a resume continues the same average.
    ema_decay: float = 0.0
    # Vocal tract length perturbation for students with the log-mel front end: every training chunk's spectrum is
    # warped along frequency by a factor drawn uniformly from [1 - freq_warp, 1 + freq_warp] (students.model.
    # warp_spectrum), so formants move as between speakers while timing and labels stay. 0 = off. Waveform
    # students have no spectrum to warp and train without it (their training summary says so).
    freq_warp: float = 0.0
    # SpecAugment's frequency masking (Park et al. 2019) for students with the log-mel front end: in every training
    # chunk, ``freq_masks`` bands of up to ``freq_mask_bands`` adjacent mel bands each (width and start drawn
    # uniformly) read that band's mean over the chunk instead of their values. 0 = off. Inference and every binary
    # are unchanged. Default 2 (of up to 8 of 64 bands) since stop 33: tiny-mel test MSE / mean 0.391 -> 0.360 and
    # lip closure 0.70 -> 0.74, means over seeds 0-2, every seed lower (reports/bench/tiny_mel_specaugment.txt).
    # Configs saved as version 1 (before this option) read as 0: they trained without masks.
    freq_masks: int = 2
    freq_mask_bands: int = 8
    # Random equalizer for students with the log-mel front end: every training chunk's log-mel bands get a smooth
    # random gain curve over frequency (three cosine components over the band axis, a tilt, a bow and a wave,
    # each with an amplitude drawn uniformly from +-freq_eq_db / 3 dB, so no band moves more than freq_eq_db),
    # as between voices whose formants differ in strength, or between microphones. 0 = off. Inference and every
    # binary are unchanged.
    freq_eq_db: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "presets", tuple(self.presets))
        object.__setattr__(self, "match", tuple(self.match))
        object.__setattr__(self, "steps", {str(k): int(v) for k, v in self.steps.items()})
        if self.version != DISTILL_VERSION:
            msg = f"distill config: unsupported version {self.version} (this code reads {DISTILL_VERSION})"
            raise DistillError(msg)
        for name in (*self.presets, self.stage1, *self.overrides):
            if name not in PRESETS:
                msg = f"distill config: unknown preset {name!r}; choose from {', '.join(PRESETS)}"
                raise DistillError(msg)
        if (
            min(
                self.batch_size,
                self.chunk_frames,
                self.checkpoint_every,
                self.default_steps,
                self.feature_chunks,
            )
            < 1
        ):
            msg = "distill config: batch sizes, chunk_frames, checkpoint_every and default_steps must be >= 1"
            raise DistillError(msg)
        if (
            min(
                self.velocity_weight,
                self.closure_weight,
                self.closure_hinge_weight,
                self.closure_margin,
                self.feature_weight,
                self.labeled_weight,
                self.lr,
                self.weight_decay,
            )
            < 0
        ):
            msg = "distill config: weights and lr must be >= 0"
            raise DistillError(msg)
        if not 0 <= self.freq_warp < 0.5:
            msg = f"distill config: freq_warp must be in [0, 0.5), got {self.freq_warp}"
            raise DistillError(msg)
        if self.freq_masks < 0 or self.freq_mask_bands < 1:
            msg = f"distill config: freq_masks must be >= 0 and freq_mask_bands >= 1, got {self.freq_masks}, {self.freq_mask_bands}"
            raise DistillError(msg)
        if not 0 <= self.freq_eq_db <= 40:
            msg = f"distill config: freq_eq_db must be in [0, 40] dB, got {self.freq_eq_db}"
            raise DistillError(msg)
        if not 0 <= self.ema_decay < 1:
            msg = f"distill config: ema_decay must be in [0, 1), got {self.ema_decay}"
            raise DistillError(msg)

    def student_config(self, name: str) -> StudentConfig:
        return preset(name, **self.overrides.get(name, {}))

    def steps_for(self, name: str) -> int:
        return self.steps.get(name, self.default_steps)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return json.loads(
            json.dumps(d)
        )  # JSON-normal form (lists, str keys): compares equal after a round trip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DistillConfig:
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            msg = f"distill config: unknown keys {unknown}"
            raise DistillError(msg)
        if data.get("version") == 1:
            # saved before freq_masks had a non-zero default, so it trained without masks
            data = {"freq_masks": 0, **data, "version": 2}
        return cls(**data)

    def matches(self, saved: Any) -> bool:
        """Whether ``saved`` (a config dict from a card or checkpoint) describes this config. Keys added to the
        config since it was saved read as their defaults, so an upgrade that adds an option (at its neutral
        default) does not invalidate finished work."""
        return config_matches(self, saved, (DistillError, TypeError))

    def _as_seen_by(self, name: str) -> dict[str, Any]:
        """What decides how preset ``name`` trains: every field, with the preset list dropped and the step table and
        overrides narrowed to ``name``'s own."""
        d = self.to_dict()
        for key in ("presets", "steps", "default_steps", "overrides"):
            d.pop(key)
        if self.student_config(name).frontend != "logmel":  # options that only touch the log-mel front end
            for key in LOGMEL_ONLY:
                d.pop(key)
        return {**d, "steps": self.steps_for(name), "overrides": self.overrides.get(name, {})}

    def matches_preset(self, name: str, saved: Any) -> bool:
        """Whether ``saved`` (a config from ``name``'s card or checkpoint) trained ``name`` as this config would.
        Unlike :meth:`matches`, the other presets do not count: adding a preset to a run, or changing another
        preset's steps, leaves finished presets valid. Keys added since it was saved read as their defaults."""
        if not isinstance(saved, dict):
            return False
        try:
            return DistillConfig.from_dict(saved)._as_seen_by(name) == self._as_seen_by(name)
        except (DistillError, TypeError):
            return False

    def quick(self) -> DistillConfig:
        """A smoke-test version of this config: 2.5 % of the steps (at least 20)."""
        steps = {p: max(20, self.steps_for(p) // 40) for p in self.presets}
        return DistillConfig.from_dict({**self.to_dict(), "steps": steps, "checkpoint_every": 20})


def spec_band_mask(rng: np.random.Generator, rows: int, bands: int, masks: int, width: int) -> torch.Tensor:
    """[rows, bands] bool: ``masks`` runs of 0..``width`` adjacent bands per row (SpecAugment's frequency masks)."""
    out = np.zeros((rows, bands), dtype=bool)
    for r in range(rows):
        for _ in range(masks):
            w = int(rng.integers(0, min(width, bands) + 1))
            start = int(rng.integers(0, bands - w + 1))
            out[r, start : start + w] = True
    return torch.from_numpy(out)


EQ_COMPONENTS = 3  # cosine components of DistillConfig.freq_eq_db's random gain curve


def spec_band_eq(rng: np.random.Generator, rows: int, bands: int, db: float) -> torch.Tensor:
    """[rows, bands] float32: one smooth random gain curve per row, in natural-log power units, bounded by
    ``db`` decibels: ``sum_k a_k cos(pi k (m + 1/2) / bands)`` for k = 1..3, ``a_k`` uniform in ``+-db / 3``."""
    k = np.arange(1, EQ_COMPONENTS + 1)
    basis = np.cos(np.pi * np.outer(k, np.arange(bands) + 0.5) / bands)  # [K, bands]
    amp = rng.uniform(-db / EQ_COMPONENTS, db / EQ_COMPONENTS, size=(rows, EQ_COMPONENTS))
    return torch.from_numpy((amp @ basis) * (np.log(10.0) / 10.0)).float()


# ---- losses -------------------------------------------------------------------------------------------------


def curve_loss(
    pred: torch.Tensor, batch: Batch, velocity_weight: float, channel_weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """Masked reconstruction MSE (channels weighted by ``channel_weights``, normalised by their sum) +
    ``velocity_weight`` x MSE of consecutive-frame differences."""
    n_ch = pred.shape[-1]
    m = batch.mask.unsqueeze(-1).to(pred.dtype)
    if channel_weights is None:
        recon = ((pred - batch.targets) ** 2 * m).sum() / (m.sum() * n_ch).clamp(min=1)
    else:
        w = channel_weights.to(pred.dtype)
        recon = ((pred - batch.targets) ** 2 * m * w).sum() / (m.sum() * w.sum()).clamp(min=1e-12)
    mv = (batch.mask[:, 1:] & batch.mask[:, :-1]).unsqueeze(-1).to(pred.dtype)
    dv = (pred.diff(dim=1) - batch.targets.diff(dim=1)) ** 2 * mv
    vel = dv.sum() / (mv.sum() * n_ch).clamp(min=1)
    return recon + velocity_weight * vel, {"recon": recon.item(), "velocity": vel.item()}


def align_features(
    student: torch.Tensor, rf_student: int, teacher: torch.Tensor, rf_teacher: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop two [B, C, T] feature maps of the same chunk to the grid positions whose RF centres coincide."""
    shift = (rf_student - rf_teacher) // (2 * ANCHOR_QUANTUM)  # teacher index = student index + shift
    lo = max(0, -shift)
    hi = min(student.shape[-1], teacher.shape[-1] - shift)
    return student[..., lo:hi], teacher[..., lo + shift : hi + shift]


class _Trainee(nn.Module):
    """The student plus its feature adapters: one module so DDP sees every trained parameter in ``forward``."""

    def __init__(self, student: Student, teacher: Student | None, match: tuple[str, ...]):
        super().__init__()
        self.student = student
        self.adapters = nn.ModuleDict()
        self.match = match if teacher is not None else ()
        for name in self.match:
            c_s = _feature_width(student, name)
            c_t = _feature_width(teacher, name)
            key = name.replace(".", "_")
            self.adapters[key] = nn.Identity() if c_s == c_t else nn.Conv1d(c_s, c_t, 1)

    def forward(
        self, audio: torch.Tensor, anchors: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        pred, feats = self.student.forward_full(audio, anchors, pad=False, return_features=True)
        return pred, {n: self.adapters[n.replace(".", "_")](feats[n]) for n in self.match}


def _feature_width(model: Student, name: str) -> int:
    model.feature_receptive_field(name)  # refuses unknown layer names with a clear message
    kind, _, idx = name.partition(".")
    return getattr(model, kind)[int(idx)].out_channels


def feature_loss(
    trainee: _Trainee, feats: dict[str, torch.Tensor], teacher: Student, audio: torch.Tensor
) -> torch.Tensor:
    """Mean over matched layers of MSE(adapter(student), teacher) / mean(teacher^2), aligned by time."""
    with torch.no_grad():
        _, t_feats = teacher.encode(audio, features=True)
    total = audio.new_zeros(())
    for name in trainee.match:
        s, t = align_features(
            feats[name],
            trainee.student.feature_receptive_field(name),
            t_feats[name],
            teacher.feature_receptive_field(name),
        )
        total = total + F.mse_loss(s, t) / (t.pow(2).mean() + 1e-6)
    return total / max(1, len(trainee.match))


# ---- one student ----------------------------------------------------------------------------------------------


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def resolve_device(name: str | torch.device = "cpu") -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when one is visible, else the CPU) as a torch device.

    Under ``torchrun`` a bare ``cuda`` means this rank's GPU (``LOCAL_RANK``). Asking for CUDA where none is visible
    is refused with a clear error rather than silently training on the CPU.
    """
    text = str(name)
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(text)
    except RuntimeError:
        msg = f"--device {name!r}: not a device; use cpu, cuda, cuda:N or auto"
        raise DistillError(msg) from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        msg = f"--device {name!r}: only cpu and cuda are supported"
        raise DistillError(msg)
    if not torch.cuda.is_available():
        msg = f"--device {name!r}: no CUDA device is visible to torch {torch.__version__} (use --device cpu)"
        raise DistillError(msg)
    if device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device.index >= torch.cuda.device_count():
        msg = f"--device {name!r}: only {torch.cuda.device_count()} CUDA device(s) visible"
        raise DistillError(msg)
    return device


def _describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def _lr_at(step: int, steps: int, lr: float) -> float:
    warm = 20
    if step < warm:
        return lr * (step + 1) / warm
    t = (step - warm) / max(1, steps - warm)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def _init_output_bias(student: Student, mean: np.ndarray) -> None:
    p = np.clip(mean, 0.01, 0.99)
    with torch.no_grad():
        student.out.bias.copy_(torch.from_numpy(np.log(p / (1 - p))).float())


# A cold student (random output init) whose head's ReLU units all stop firing is a mean predictor for good: no
# gradient reaches a dead unit. When the head's first conv gets no gradient for this many steps in a row, training
# restarts from step 0 with the output weights at zero (DistillConfig.zero_out_init), which keeps the units alive
# (reports/bench/tiny_mel_specaugment.txt: tiny-mel at 32 ms of future audio, seed 0, died this way).
DEAD_HEAD_STEPS = 50


class _DeadHead(Exception):
    def __init__(self, step: int):
        super().__init__(step)
        self.step = step


def train_student(config: StudentConfig, train: Split, **options: Any) -> tuple[Student, dict[str, Any]]:
    """Train one student for ``steps`` steps; keyword ``options`` as :func:`_train_student` (settings, steps,
    teacher, labeled, checkpoint, augment, progress, device). A cold student whose head dies (every unit of its
    first head layer silent for ``DEAD_HEAD_STEPS`` steps: a mean predictor) is restarted from step 0 with zero
    output weights; its summary records ``dead_head_restart`` (the step), and so does its checkpoint, so a resumed
    run continues the restarted one."""
    try:
        return _train_student(config, train, **options)
    except _DeadHead as dead:
        rank, world = _rank_world()
        print(
            f"distill {config.name}: every head unit stopped firing by step {dead.step} (a mean predictor); "
            "restarting with zero output weights",
            file=sys.stderr,
        )
        if options.get("checkpoint") is not None and rank == 0:
            Path(options["checkpoint"]).unlink(missing_ok=True)
        if world > 1:
            dist.barrier()
        return _train_student(config, train, **options, restart=dead.step)


def _train_student(
    config: StudentConfig,
    train: Split,
    *,
    settings: DistillConfig,
    steps: int,
    teacher: Student | None = None,
    labeled: Split | None = None,
    checkpoint: str | os.PathLike | None = None,
    augment: bool = False,
    progress: bool = True,
    device: str | torch.device = "cpu",
    restart: int | None = None,
) -> tuple[Student, dict[str, Any]]:
    """Train one student for ``steps`` steps on ``train`` targets (+ teacher features, + labeled ground truth).
    ``restart``: the step at which a dead head restarted this run (train_student passes it; a checkpoint of such a
    run carries it), so the output weights start at zero and the head is not watched.

    ``checkpoint`` (a path) makes the run resumable: it is rewritten every ``settings.checkpoint_every`` steps
    and a rerun continues from it (on any device: checkpoints are loaded to the CPU first). ``augment`` adds
    gain/noise to ``train`` chunks (for labeled-only training). ``device`` (see ``resolve_device``) is where the
    forward and backward passes run; chunks are still cut on the CPU, with the same random draws, so a CUDA run
    sees the same batches as a CPU run (its floats round differently, and the difference grows over the steps:
    the two students agree within training noise, reports/bench/distill_device.txt). Returns the trained student
    (on the CPU, eval mode) and a summary (steps, seconds, s/step, device, last losses).
    """
    rank, world = _rank_world()
    device = resolve_device(device)
    data = _data_identity(train, labeled)
    torch.manual_seed(settings.seed)
    student = Student(config)
    _init_output_bias(student, train.target_mean())
    warm = student.warm_start_from(teacher) if teacher is not None and settings.warm_start else None
    zero_out = (settings.zero_out_init or restart is not None) and warm is None
    if zero_out:
        with torch.no_grad():
            student.out.weight.zero_()
    trainee = _Trainee(student, teacher, settings.match if settings.feature_weight > 0 else ()).to(device)
    # a head whose first layer gets no gradient for DEAD_HEAD_STEPS steps is dead (train_student restarts it); with
    # a feature loss the encoder still learns and could wake a unit, so such runs are not watched
    watch = len(student.head) and warm is None and not zero_out and not trainee.match
    watch_head = student.head[0] if watch else None
    silent_steps = 0
    if teacher is not None:
        teacher.to(device)
    models = [student] + ([teacher] if teacher is not None else [])
    left = max(m.left_context for m in models)
    right = max(m.lookahead_samples for m in models)
    sampler = ChunkSampler(train, frames=settings.chunk_frames, left=left, right=right, augment=augment)
    use_labeled = labeled is not None and settings.labeled_weight > 0
    if use_labeled:
        gt_sampler = ChunkSampler(
            labeled, frames=settings.chunk_frames, left=left, right=right, augment=settings.augment_labeled
        )
    if settings.weight_decay > 0:
        optim = torch.optim.AdamW(trainee.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    else:
        optim = torch.optim.Adam(trainee.parameters(), lr=settings.lr)
    start = 0
    weights = None
    hinge_channel = closure_channel(train.channel_names, settings.closure_hinge_weight)

    def hinge(p: torch.Tensor, b: Batch) -> torch.Tensor:
        return settings.closure_hinge_weight * closure_hinge(
            p, b.targets, b.mask, hinge_channel, settings.closure_margin
        )

    if settings.closure_weight > 0 and LIP_CLOSURE_CHANNEL in train.channel_names:
        weights = closure_weights(train.channel_names, settings.closure_weight).to(device)
    ema = _ema_init(student) if settings.ema_decay > 0 else None
    warp_bins = student.logmel if settings.freq_warp > 0 else None
    mask_bins = student.logmel if settings.freq_masks > 0 else None
    eq_bins = student.logmel if settings.freq_eq_db > 0 else None
    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    if ckpt_path is not None and ckpt_path.is_file():
        try:
            state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a torn or foreign file is a user error, not a crash
            msg = f"{ckpt_path}: unreadable training checkpoint ({type(exc).__name__}); delete it to restart"
            raise DistillError(msg) from None
        if (
            not isinstance(state, dict)
            or state.get("format") != PROGRESS_FORMAT
            or state.get("student_config") != config.to_dict()
        ):
            msg = f"{ckpt_path}: checkpoint of a different student or run; delete it or choose another --out"
            raise DistillError(msg)
        if (
            not settings.matches_preset(config.name, state.get("distill_config"))
            or state.get("steps") != steps
        ):
            msg = f"{ckpt_path}: checkpoint was made with another distill config; delete it or choose another --out"
            raise DistillError(msg)
        if state.get("data", data) != data:  # a checkpoint saved before this key existed resumes as before
            msg = f"{ckpt_path}: checkpoint was trained on other labels ({_data_change(state['data'], data)}); delete it or choose another --out"
            raise DistillError(msg)
        trainee.load_state_dict(state["trainee"])
        optim.load_state_dict(state["optimizer"])
        start = int(state["step"])
        if ema is not None:
            ema = {k: v.to(device) for k, v in state["ema"].items()}
        restart = state.get("dead_head_restart", restart)
        if restart is not None:  # the weights of a run restarted after a dead head: nothing left to watch
            watch_head = None
    model: nn.Module = trainee
    if world > 1:
        model = nn.parallel.DistributedDataParallel(
            trainee, device_ids=[device.index] if device.type == "cuda" else None
        )
    trainee.train()
    last: dict[str, float] = {}
    t0 = time.perf_counter()
    bar = tqdm(
        range(start, steps),
        initial=start,
        total=steps,
        desc=f"distill {config.name}",
        disable=not progress or rank != 0,
        file=sys.stderr,
        leave=False,
    )
    for step in bar:
        lr = _lr_at(step, steps, settings.lr)
        for group in optim.param_groups:
            group["lr"] = lr
        rng = np.random.default_rng([settings.seed, rank, step])
        batch = sampler.batch(settings.batch_size, rng).to(device)
        n = settings.batch_size
        gt = gt_sampler.batch(n, rng).to(device) if use_labeled else None
        rows = 2 * n if use_labeled else n  # chunks in this forward pass
        if warp_bins is not None:  # drawn after the batches, so the chunks are those of an unwarped run
            warp = rng.uniform(1 - settings.freq_warp, 1 + settings.freq_warp, size=rows)
            warp_bins.warp = torch.tensor(warp, dtype=torch.float32, device=device)
        if mask_bins is not None:  # drawn after the batches (and the warp), as the warp
            mask_bins.band_mask = spec_band_mask(
                rng, rows, student.config.logmel_bands, settings.freq_masks, settings.freq_mask_bands
            ).to(device)
        if eq_bins is not None:  # drawn last, so warp and masks are those of a run without it
            eq_bins.band_offset = spec_band_eq(
                rng, rows, student.config.logmel_bands, settings.freq_eq_db
            ).to(device)
        try:
            if gt is not None:  # one forward over pseudo-labeled + labeled chunks (same length): one DDP pass
                pred, feats = model(
                    torch.cat([batch.audio, gt.audio]), torch.cat([batch.anchors, gt.anchors])
                )
                gt_loss, _ = curve_loss(pred[n:], gt, settings.velocity_weight, weights)
                if hinge_channel is not None:
                    gt_loss = gt_loss + hinge(pred[n:], gt)
                pred, feats = pred[:n], {k: v[:n] for k, v in feats.items()}
            else:
                pred, feats = model(batch.audio, batch.anchors)
        finally:
            if warp_bins is not None:
                warp_bins.warp = None
            if mask_bins is not None:
                mask_bins.band_mask = None
            if eq_bins is not None:
                eq_bins.band_offset = None
        loss, last = curve_loss(pred, batch, settings.velocity_weight, weights)
        if hinge_channel is not None:
            h = hinge(pred, batch)
            loss = loss + h
            last["hinge"] = h.item()
        if trainee.match:
            k = min(n, settings.feature_chunks)
            f_loss = feature_loss(
                trainee, {name: f[:k] for name, f in feats.items()}, teacher, batch.audio[:k]
            )
            loss = loss + settings.feature_weight * f_loss
            last["feature"] = f_loss.item()
        if use_labeled:
            loss = loss + settings.labeled_weight * gt_loss
            last["labeled"] = gt_loss.item()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        if watch_head is not None:  # DDP has all-reduced the gradient: every rank takes the same decision
            grad = watch_head.weight.grad
            silent_steps = silent_steps + 1 if grad is None or not bool(grad.any()) else 0
            if silent_steps >= DEAD_HEAD_STEPS:
                bar.close()
                raise _DeadHead(step + 1)
        if settings.grad_clip > 0:
            nn.utils.clip_grad_norm_(trainee.parameters(), settings.grad_clip)
        optim.step()
        if ema is not None:
            _ema_update(ema, student, min(settings.ema_decay, (1 + step) / (10 + step)))
        bar.set_postfix(recon=f"{last['recon']:.4f}")
        done = step + 1
        if ckpt_path is not None and (done % settings.checkpoint_every == 0 or done == steps):
            if rank == 0:
                progress_state = {
                    "format": PROGRESS_FORMAT,
                    "student_config": config.to_dict(),
                    "distill_config": settings.to_dict(),
                    "steps": steps,
                    "step": done,
                    "data": data,
                    "trainee": trainee.state_dict(),
                    "optimizer": optim.state_dict(),
                }
                if ema is not None:
                    progress_state["ema"] = ema
                if restart is not None:
                    progress_state["dead_head_restart"] = restart
                atomic_torch_save(ckpt_path, progress_state)
            if world > 1:
                dist.barrier()
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    ran = steps - start
    summary = {
        "steps": steps,
        "steps_this_run": ran,
        "seconds_this_run": round(seconds, 2),
        "seconds_per_step": round(seconds / ran, 4) if ran else None,
        "world_size": world,
        "device": _describe_device(device),
        "warm_start": warm,
        "batch_size": settings.batch_size,
        "last_losses": last,
    }
    if restart is not None:
        summary["dead_head_restart"] = restart
    if settings.freq_warp > 0:
        summary["freq_warp"] = (
            settings.freq_warp if warp_bins is not None else "not applied (waveform front end)"
        )
    if settings.freq_masks > 0:
        summary["freq_masks"] = (
            [settings.freq_masks, settings.freq_mask_bands]
            if mask_bins is not None
            else "not applied (waveform front end)"
        )
    if settings.freq_eq_db > 0:
        summary["freq_eq_db"] = (
            settings.freq_eq_db if eq_bins is not None else "not applied (waveform front end)"
        )
    if teacher is not None:
        teacher.cpu()
    if ema is not None:
        student.load_state_dict(ema)
        summary["ema_decay"] = settings.ema_decay
    return student.cpu().eval(), summary


def _ema_init(student: Student) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in student.state_dict().items()}


@torch.no_grad()
def _ema_update(ema: dict[str, torch.Tensor], student: Student, decay: float) -> None:
    for k, v in student.state_dict().items():
        if v.dtype.is_floating_point:
            ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
        else:
            ema[k].copy_(v)


# ---- the stage ------------------------------------------------------------------------------------------------


def _data_identity(train: Split, labeled: Split | None) -> dict[str, str | None]:
    """What a student learns from: the contents of its training labels and of its ground-truth split (shard
    hashes, not folder paths, so a moved or re-merged folder with the same labels is the same data)."""
    return {
        "pseudo_labels_content_sha256": train.content_sha256,
        "labeled_content_sha256": labeled.content_sha256 if labeled is not None else None,
    }


def _card_data(card: dict) -> dict[str, str | None] | None:
    parent = card.get("parent") or {}
    if "pseudo_labels_content_sha256" not in parent:
        return None  # a card written before content hashes were recorded: kept, as before
    return {k: parent.get(k) for k in ("pseudo_labels_content_sha256", "labeled_content_sha256")}


def _data_change(saved: dict, now: dict) -> str:
    names = {"pseudo_labels_content_sha256": "pseudo-labels", "labeled_content_sha256": "labeled split"}
    return ", ".join(f"{names.get(k, k)} differ" for k in now if saved.get(k) != now.get(k)) or "data differ"


def load_pseudo(pseudo_dir: Path) -> Split:
    """A pseudo-label dataset folder, or a folder of such folders (their utterances are pooled)."""
    if (pseudo_dir / MANIFEST).is_file():
        return load_split(pseudo_dir)
    subs = sorted(p for p in pseudo_dir.glob("*") if (p / MANIFEST).is_file()) if pseudo_dir.is_dir() else []
    if not subs:
        msg = f"{pseudo_dir}: no pseudo-label dataset here (run `compress label` first)"
        raise DatasetError(msg)
    return merge_splits([load_split(p) for p in subs])


def _order(config: DistillConfig) -> Iterator[str]:
    """Stage 1 first (when asked for), then the rest in the given order."""
    if config.stage1 in config.presets:
        yield config.stage1
    yield from (p for p in config.presets if p != config.stage1)


def distill(
    pseudo_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    config: DistillConfig = DistillConfig(),
    labeled_dir: str | os.PathLike | None = None,
    test_dir: str | os.PathLike | None = None,
    progress: bool = True,
    device: str = "cpu",
) -> dict[str, dict]:
    """Distil every preset of ``config`` into ``out_dir/<preset>/student.pt`` + ``card.json``; returns the cards.

    Finished presets (a card with the same configs) are skipped; interrupted ones resume from their checkpoint.
    Under ``torchrun`` (WORLD_SIZE > 1) a process group is set up (gloo on the CPU, nccl with ``device`` cuda: one
    GPU per rank) and every rank trains the same steps. ``device`` is not part of the config: a run may resume on
    another device, and its card records where each preset trained.
    """
    resolved = resolve_device(device)
    own_group = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo")
        own_group = True
    try:
        return _distill(Path(pseudo_dir), Path(out_dir), config, labeled_dir, test_dir, progress, resolved)
    finally:
        if own_group:
            dist.destroy_process_group()


def _distill(
    pseudo_dir: Path,
    out_dir: Path,
    config: DistillConfig,
    labeled_dir: str | os.PathLike | None,
    test_dir: str | os.PathLike | None,
    progress: bool,
    device: torch.device,
) -> dict[str, dict]:
    rank, world = _rank_world()
    train = load_pseudo(pseudo_dir)
    labeled = load_split(labeled_dir) if labeled_dir is not None and config.labeled_weight > 0 else None
    if config.labeled_weight > 0 and labeled is None:
        msg = f"distill config: labeled_weight={config.labeled_weight} needs a labeled split (--labeled)"
        raise DistillError(msg)
    test = load_split(test_dir, field="truth") if test_dir is not None else None
    mean_vector = train.target_mean()
    data = _data_identity(train, labeled)  # what every finished preset must have learned from
    cards: dict[str, dict] = {}
    teacher: Student | None = None
    for name in _order(config):
        folder = out_dir / name
        card_path, student_path = folder / "card.json", folder / "student.pt"
        student_config = config.student_config(name)
        steps = config.steps_for(name)
        if card_path.is_file() and student_path.is_file():
            card = json.loads(card_path.read_text())
            if (
                config.matches_preset(name, card.get("distill_config"))
                and card.get("config") == student_config.to_dict()
            ):
                trained_on = _card_data(card)
                if trained_on is not None and trained_on != data:
                    msg = (
                        f"{card_path}: trained on other labels ({_data_change(trained_on, data)}); delete "
                        f"{folder} or choose another --out"
                    )
                    raise DistillError(msg)
                if rank == 0 and progress:
                    print(f"distill {name}: already trained ({student_path}), skipping", file=sys.stderr)
                cards[name] = card
                if name == config.stage1:
                    teacher = load_student(student_path)
                continue
            msg = f"{card_path}: trained with another config; delete {folder} or choose another --out"
            raise DistillError(msg)
        if name != config.stage1 and teacher is None:
            teacher = _stage1_teacher(out_dir / config.stage1 / "student.pt")
        student, summary = train_student(
            student_config,
            train,
            settings=config,
            steps=steps,
            teacher=None if name == config.stage1 else teacher,
            labeled=labeled,
            checkpoint=folder / "checkpoint.pt",
            progress=progress,
            device=device,
        )
        if rank == 0:
            card = _card(name, student, config, summary, train, labeled, test, mean_vector, world)
            save_student(student_path, student, distill_config=config.to_dict(), stage=card["stage"])
            atomic_write_json(card_path, card)
            (folder / "checkpoint.pt").unlink(missing_ok=True)
            if progress:
                s = summary
                print(
                    f"distill {name}: {s['steps_this_run']} steps in {s['seconds_this_run']:.0f} s "
                    f"({s['seconds_per_step']} s/step x {world} ranks) -> {student_path}",
                    file=sys.stderr,
                )
            cards[name] = card
        if world > 1:
            dist.barrier()
        if name == config.stage1:
            teacher = student
        if teacher is not None:
            teacher.eval().requires_grad_(False)
    return cards


def _stage1_teacher(path: Path) -> Student:
    if not path.is_file():
        msg = f"{path}: stage-2 presets need the trained stage-1 student; include it in --presets first"
        raise DistillError(msg)
    return load_student(path).requires_grad_(False)


def _card(
    name: str,
    student: Student,
    config: DistillConfig,
    summary: dict,
    train: Split,
    labeled: Split | None,
    test: Split | None,
    mean_vector: np.ndarray,
    world: int,
) -> dict[str, Any]:
    card: dict[str, Any] = {
        "artifact": "student.pt",
        "preset": name,
        "stage": 1 if name == config.stage1 else 2,
        "config": student.config.to_dict(),
        "distill_config": config.to_dict(),
        **describe(student),
        "parent": {
            "pseudo_labels_manifest_sha256": train.manifest_sha256,
            "pseudo_labels_seconds": round(train.seconds, 1),
            "labeled_manifest_sha256": labeled.manifest_sha256 if labeled is not None else None,
            **_data_identity(train, labeled),
            "feature_teacher": None if name == config.stage1 else config.stage1,
        },
        "training": summary,
    }
    if test is not None:
        metrics = evaluate_student(student, test, mean_vector=mean_vector)
        card["test"] = {"manifest_sha256": test.manifest_sha256, "metrics": metrics}
    return card
