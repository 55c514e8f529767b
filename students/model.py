"""Student architectures: raw 16 kHz waveform window -> one frame of rig curves, with exact lookahead accounting.

A student is three stacks of *valid* (unpadded) 1-D convolutions and nothing else (no normalisation, no state):

* **frontend** -- strided convs with kernel == stride (non-overlapping, e.g. 4, 4, 4), whose strides multiply to
  exactly ``ANCHOR_QUANTUM`` = 64 samples, so every later layer runs on the 4 ms anchor grid. Optionally
  (``frontend="logmel"``) a fixed log-mel filterbank (:class:`LogMel`: a Hamming-windowed DFT conv of 16 ms at hop
  64, power, a mel conv, log) comes first and the learned frontend convs are 1x1; its window ends at the cell's
  last sample, so it adds past context, not lookahead;
* **context** -- stride-1, kernel-3 dilated convs on that grid;
* optional **bottleneck** -- a linear 1x1 conv to ``head_bottleneck`` channels (makes the head, and so a streamed
  frame, cheaper);
* **head** -- "fully connected over the window": one conv whose kernel ``K`` spans all remaining grid positions,
  then 1x1 convs (= FC layers) through ``head_hidden``, then a 1x1 conv to the rig channels and a sigmoid.

``K`` is derived so that the receptive field of one output frame is exactly ``past + future`` samples: the frame
for anchor ``a`` reads ``[a - past, a + future)``. Because the network is fully convolutional, training runs the
encoder once over a whole chunk and evaluates the head only at the anchors (:meth:`Student.forward_full`); the
exported form (:meth:`Student.forward`) takes one window and gives one frame -- the very same numbers.

Smoothing (the paper's real-time ensemble) evaluates the head at ``anchor - d``, ``anchor`` and ``anchor + d``
and averages the three frames, i.e. it runs at twice the output rate. ``d`` is half an output frame rounded to the
64-sample grid: 1/60 s = 16.7 ms cannot be represented, so at 30 fps ``d`` = 256 samples = 16 ms (8 ms at 60 fps).
The ``+ d`` frame reads ``d`` more future samples, which :attr:`Student.lookahead_ms` counts.

Every number about time (receptive field, lookahead, window length) is *derived* from the layers; nothing is typed.

Presets (random init; ``compress students`` prints the same table, measured from the code):

============  ==========  ============  ==========  ================================================================
preset        params      fp32 bytes    lookahead   notes
============  ==========  ============  ==========  ================================================================
small         3 061 124   12 244 496    256 ms      stage-1 student of the paper: 256 ms past / 256 ms future
tiny          195 532     782 128       256 ms      ``small``'s convs with 75 % fewer channels; same budget re-spent in
                                                    the head: 32-channel bottleneck, 40 hidden units (see PRESETS)
realtime      1 203 652   4 814 608     80 ms       448 ms past / 64 ms future + 16 ms smoothing (3-frame ensemble);
                                                    small's convs, head reads a 64-channel linear bottleneck
edge          43 356      173 424       32 ms       ours: <= 50 k params, 192 ms past / 32 ms future; bottleneck 16
edge-mulaw    43 356      173 424       32 ms       ours: edge reading mu-law companded audio, so it quantizes to full
                                                    int8 (int8 activations too); see bench/bench_mulaw.py
small-mulaw   3 061 124   12 244 496    256 ms      ours: small reading mu-law audio (full int8 small); stage 2, starts
                                                    from small's weights
tiny-mel      259 740     1 038 960     256 ms      tiny's widths behind the fixed log-mel filterbank (74 304 of the
                                                    params are its fixed DFT and mel filters; 185 436 are trained)
realtime-mel  259 740     1 038 960     80 ms       ours: tiny-mel at realtime's window (448 / 64 ms + smoothing)
edge-mel      49 880      199 520       32 ms       ours: edge's budget (<= 50 k params, the filterbank's 18 720 counted)
                                                    with an 8 ms / 32-band log-mel filterbank and 48-channel convs
causal-mel    177 820     711 280       0 ms        ours: tiny-mel with no future audio (256 ms past)
causal        153 460     613 840       0 ms        ours: 320 ms past, no future audio at all; bottleneck 32
============  ==========  ============  ==========  ================================================================
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from teacher.constants import (
    ANCHOR_QUANTUM,
    ARKIT_52,
    DEFAULT_FPS,
    SAMPLE_RATE,
    SUPPORTED_FPS,
    ms_to_samples,
    samples_to_ms,
)
from teacher.errors import FacedistillError
from teacher.fsutil import atomic_torch_save

CONFIG_VERSION = 1
CHECKPOINT_FORMAT = "facedistill-student"
INPUT_ENCODINGS = ("linear", "mulaw")
FRONTENDS = ("waveform", "logmel")
LOGMEL_FLOOR = 1e-6  # added to the mel power before the log (silence reads log(1e-6) = -13.8)
# log-mel features are (log(power + floor) - centre) * 0.25, the centre halfway between silence (the floor) and a
# full-scale tone (LogMel.center): speech then spans about [-2.8, 2.8] with no large common offset. Without the
# centre (all features around -2) a causal student's head died in its first steps (scratch run, stop 15)
LOGMEL_SCALE = 0.25


class StudentConfigError(FacedistillError, ValueError):
    """A student configuration whose layers cannot produce exactly the requested window."""


@dataclass(frozen=True)
class StudentConfig:
    """Every size of a student. Channel counts are per layer, so a pruned model is just another config."""

    version: int = CONFIG_VERSION
    name: str = "small"
    past_ms: float = 256.0  # audio before the anchor that a frame reads (multiple of 4 ms)
    future_ms: float = 256.0  # audio after the anchor (multiple of 4 ms); smoothing adds its own delay
    strides: tuple[int, ...] = (4, 4, 4)  # frontend kernel == stride; product must be ANCHOR_QUANTUM
    frontend_channels: tuple[int, ...] = (64, 128, 256)
    context_channels: tuple[int, ...] = (256, 256)
    context_dilations: tuple[int, ...] = (1, 2)
    head_hidden: tuple[int, ...] = (80,)
    head_bottleneck: int = 0  # >0: a linear 1x1 conv to this many channels before the head (cheap streaming)
    channel_names: tuple[str, ...] = ARKIT_52
    fps: int = DEFAULT_FPS
    smoothing: bool = False
    # what the model's first layer sees: "linear" audio in [-1, 1], or "mulaw" (G.711-style companding
    # sign(x) ln(1 + mu |x|) / ln(1 + mu), applied by the host before a binary's input; see encode_input)
    input_encoding: str = "linear"
    input_mu: float = 255.0
    # "waveform": the learned frontend convs read the audio (the paper's student). "logmel": a fixed log-mel
    # filterbank (Hamming-windowed DFT conv of logmel_ms, hop 64 samples, power, triangular mel conv, log) reads it
    # and the learned frontend convs are 1x1 (strides all 1); see LogMel. The window ends at the cell's last sample,
    # so it adds past context only, never lookahead.
    frontend: str = "waveform"
    logmel_ms: float = 16.0
    logmel_bands: int = 64

    def __post_init__(self) -> None:
        for key in ("strides", "frontend_channels", "context_channels", "context_dilations", "head_hidden"):
            object.__setattr__(self, key, tuple(int(v) for v in getattr(self, key)))
        object.__setattr__(self, "channel_names", tuple(str(v) for v in self.channel_names))
        where = f"student config {self.name!r}"
        if self.version != CONFIG_VERSION:
            msg = f"{where}: unsupported version {self.version} (this code reads version {CONFIG_VERSION})"
            raise StudentConfigError(msg)
        if self.fps not in SUPPORTED_FPS:
            msg = f"{where}: fps {self.fps} not in {SUPPORTED_FPS}"
            raise StudentConfigError(msg)
        if not self.strides or len(self.strides) != len(self.frontend_channels):
            msg = f"{where}: need one frontend channel count per stride, got {self.strides} / {self.frontend_channels}"
            raise StudentConfigError(msg)
        if self.frontend not in FRONTENDS:
            msg = f"{where}: frontend {self.frontend!r} unknown; choose from {', '.join(FRONTENDS)}"
            raise StudentConfigError(msg)
        prod = 1
        for s in self.strides:
            prod *= s
        need = 1 if self.frontend == "logmel" else ANCHOR_QUANTUM  # the log-mel filterbank hops the 64 itself
        if prod != need or min(self.strides) < 1:
            msg = f"{where}: strides {self.strides} multiply to {prod}, must be exactly {need} samples"
            if self.frontend == "logmel":
                msg += " (a logmel frontend hops 64 samples itself, so its learned frontend convs are 1x1)"
            raise StudentConfigError(msg)
        if self.frontend == "logmel":
            quantum_ms = samples_to_ms(ANCHOR_QUANTUM)
            ratio = self.logmel_ms / quantum_ms
            if ratio < 1 or abs(ratio - round(ratio)) > 1e-9:
                msg = f"{where}: logmel_ms={self.logmel_ms} must be a positive multiple of {quantum_ms:g} ms"
                raise StudentConfigError(msg)
            if not 1 <= self.logmel_bands <= self.logmel_samples // 2:
                msg = f"{where}: logmel_bands must be in [1, {self.logmel_samples // 2}], got {self.logmel_bands}"
                raise StudentConfigError(msg)
        if len(self.context_channels) != len(self.context_dilations):
            msg = f"{where}: {len(self.context_channels)} context channel counts vs {len(self.context_dilations)} dilations"
            raise StudentConfigError(msg)
        widths = self.frontend_channels + self.context_channels + self.head_hidden
        if min(widths) < 1 or (self.context_dilations and min(self.context_dilations) < 1):
            msg = f"{where}: channel counts and dilations must be >= 1"
            raise StudentConfigError(msg)
        if self.head_bottleneck < 0:
            msg = f"{where}: head_bottleneck must be >= 0 (0 = none), got {self.head_bottleneck}"
            raise StudentConfigError(msg)
        if not self.channel_names:
            msg = f"{where}: no output channels"
            raise StudentConfigError(msg)
        if self.input_encoding not in INPUT_ENCODINGS:
            msg = f"{where}: input_encoding {self.input_encoding!r} unknown; choose from {', '.join(INPUT_ENCODINGS)}"
            raise StudentConfigError(msg)
        if not self.input_mu > 0:
            msg = f"{where}: input_mu must be > 0, got {self.input_mu}"
            raise StudentConfigError(msg)
        for key in ("past_ms", "future_ms"):
            ms = getattr(self, key)
            quantum_ms = samples_to_ms(ANCHOR_QUANTUM)
            if ms < 0 or abs(ms / quantum_ms - round(ms / quantum_ms)) > 1e-9:
                msg = f"{where}: {key}={ms} must be a non-negative multiple of {quantum_ms:g} ms"
                raise StudentConfigError(msg)
        if self.head_kernel < 1:
            rf_ms = samples_to_ms(self.encoder_receptive_field)
            msg = (
                f"{where}: past+future = {self.past_ms + self.future_ms:g} ms is shorter than the encoder's "
                f"receptive field {rf_ms:g} ms; lengthen the window or use fewer/smaller dilations"
            )
            raise StudentConfigError(msg)

    @property
    def past_samples(self) -> int:
        return ms_to_samples(self.past_ms)

    @property
    def future_samples(self) -> int:
        return ms_to_samples(self.future_ms)

    @property
    def logmel_samples(self) -> int:
        """DFT window of the log-mel frontend in samples (0 for a waveform frontend)."""
        return ms_to_samples(self.logmel_ms) if self.frontend == "logmel" else 0

    @property
    def frontend_receptive_field(self) -> int:
        """Samples one frontend output (one position of the 64-sample grid) reads: 64, or the log-mel window."""
        return max(ANCHOR_QUANTUM, self.logmel_samples)

    @property
    def encoder_receptive_field(self) -> int:
        """Samples one encoder (frontend + context) output reads: frontend field + 64 * sum(2 * dilation)."""
        return self.frontend_receptive_field + ANCHOR_QUANTUM * sum(2 * d for d in self.context_dilations)

    @property
    def head_kernel(self) -> int:
        """Grid positions the first head conv spans so that the whole model reads exactly past + future."""
        window = self.past_samples + self.future_samples
        return (window - self.encoder_receptive_field) // ANCHOR_QUANTUM + 1

    @property
    def smoothing_step(self) -> int:
        """Samples between the three averaged frames: half an output frame on the 64-sample grid (0 if off)."""
        if not self.smoothing:
            return 0
        return ANCHOR_QUANTUM * max(1, round(SAMPLE_RATE / (2 * self.fps) / ANCHOR_QUANTUM))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key, value in d.items():
            if isinstance(value, tuple):
                d[key] = list(value)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudentConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            msg = f"student config: unknown keys {unknown}"
            raise StudentConfigError(msg)
        return cls(**data)


def _scaled(widths: tuple[int, ...], factor: float) -> tuple[int, ...]:
    return tuple(max(1, round(w * factor)) for w in widths)


_SMALL = StudentConfig()
_EDGE = StudentConfig(
    name="edge",
    past_ms=192.0,
    future_ms=32.0,
    frontend_channels=(16, 32, 32),
    context_channels=(32, 32),
    context_dilations=(2, 4),
    head_bottleneck=16,  # as tiny: 0.560 -> 0.552 x mean (reference runs) with 43 k instead of 48 k params
    head_hidden=(40,),
)
_TINY_MEL = replace(
    _SMALL,
    name="tiny-mel",
    frontend="logmel",
    strides=(1,),
    frontend_channels=(64,),
    context_channels=_scaled(_SMALL.context_channels, 0.25),
    head_bottleneck=32,
    head_hidden=_scaled(_SMALL.head_hidden, 0.5),
)
PRESETS: dict[str, StudentConfig] = {
    "small": _SMALL,
    # small's conv widths x 0.25; small's head scaled the same way (20 hidden units on 64 channels x 122 positions)
    # is 81 % of the parameters, so tiny spends the same budget (195 k vs 192 k) on a 32-channel bottleneck and 40
    # hidden units: test MSE 0.549 -> 0.516 x the mean baseline (`compress run` reference runs before/after, same
    # teacher and pseudo-labels; the card of each student records it)
    "tiny": replace(
        _SMALL,
        name="tiny",
        frontend_channels=_scaled(_SMALL.frontend_channels, 0.25),
        context_channels=_scaled(_SMALL.context_channels, 0.25),
        head_bottleneck=32,
        head_hidden=_scaled(_SMALL.head_hidden, 0.5),
    ),
    # small's conv widths; the head reads a 64-channel linear bottleneck so a streamed frame costs little
    "realtime": replace(
        _SMALL, name="realtime", past_ms=448.0, future_ms=64.0, smoothing=True, head_bottleneck=64
    ),
    "edge": _EDGE,
    # ours: edge's layers reading mu-law companded audio (G.711 mu = 255), so that it quantizes to full int8
    # (int8 activations, for int8-only NPUs and DSPs): bench/bench_mulaw.py measures the trade
    "edge-mulaw": replace(_EDGE, name="edge-mulaw", input_encoding="mulaw"),
    # ours: small reading mu-law audio, for full int8 (int8 input and activations). Trained as a stage-2 student it
    # starts from the frozen (linear) small's weights: same layers. bench/bench_int8_sensitivity.py measures why
    # linear-input small cannot be int8 end to end (its int8 input alone costs max |diff| 0.095 vs the 0.02 gate)
    "small-mulaw": replace(_SMALL, name="small-mulaw", input_encoding="mulaw"),
    # tiny's widths behind a fixed log-mel filterbank (16 ms Hamming window, hop 4 ms, 64 bands) instead of the raw-
    # waveform convs: the "log-mel front end computed by fixed convolutions", to compare with the paper's tiny
    "tiny-mel": _TINY_MEL,
    # ours: tiny-mel's layers at realtime's window (448 ms past / 64 ms future + the 3-frame smoothing = 80 ms), the
    # real-time student with the log-mel front end: a fifth of realtime's parameters
    # (reports/bench/mel_presets.txt measures it against realtime)
    "realtime-mel": replace(_TINY_MEL, name="realtime-mel", past_ms=448.0, future_ms=64.0, smoothing=True),
    # ours: edge's window and budget (<= 50 k params, 32 ms) behind a smaller log-mel filterbank (8 ms window, 32
    # bands: 18 720 fixed params instead of 74 304) and 48-channel convs, 31 160 trained params
    "edge-mel": replace(
        _TINY_MEL,
        name="edge-mel",
        past_ms=192.0,
        future_ms=32.0,
        logmel_ms=8.0,
        logmel_bands=32,
        frontend_channels=(48,),
        context_channels=(48, 48),
        context_dilations=(2, 4),
        head_bottleneck=16,
        head_hidden=(20,),
    ),
    # ours: tiny-mel with no future audio at all
    "causal-mel": replace(_TINY_MEL, name="causal-mel", future_ms=0.0),
    "causal": StudentConfig(
        name="causal",
        past_ms=320.0,
        future_ms=0.0,
        frontend_channels=(16, 32, 64),
        context_channels=(64, 64),
        context_dilations=(1, 2),
        head_bottleneck=32,  # as tiny, same budget (153 k vs 150 k): 0.620 -> 0.604 x mean (reference runs)
        head_hidden=(48,),
    ),
}


def preset(name: str, **overrides: Any) -> StudentConfig:
    """A preset config, optionally with fields replaced (``preset("tiny", future_ms=32.0)``)."""
    if name not in PRESETS:
        msg = f"unknown student preset {name!r}; choose from {', '.join(PRESETS)}"
        raise StudentConfigError(msg)
    return replace(PRESETS[name], **overrides)


def encode_input(audio: Any, config: StudentConfig) -> Any:
    """Audio in [-1, 1] as the model's first layer sees it: unchanged (``linear``) or mu-law companded (``mulaw``).

    Works on numpy arrays and torch tensors. A binary exported from a ``mulaw`` student takes this encoded audio
    (its card's ``input.encoding`` says so), so its int8 input levels are spread evenly over loudness, as in G.711
    telephony: 256 linear levels leave a -30 dB passage only a handful.
    """
    if config.input_encoding == "linear":
        return audio
    mu = config.input_mu
    if isinstance(audio, torch.Tensor):
        return torch.sign(audio) * torch.log1p(mu * audio.abs()) / float(np.log1p(mu))
    audio = np.asarray(audio, dtype=np.float32)
    return (np.sign(audio) * np.log1p(mu * np.abs(audio)) / np.log1p(mu)).astype(np.float32)


class InputEncoding(nn.Module):
    """The fixed (weightless) input encoding of a student: identity for ``linear`` configs."""

    def __init__(self, config: StudentConfig):
        super().__init__()
        self.config = config

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return encode_input(audio, self.config)


def mel_filters(n_fft: int, bands: int, *, fmin: float = 50.0, fmax: float = SAMPLE_RATE / 2) -> np.ndarray:
    """Triangular filters ``[bands, n_fft // 2 + 1]`` on the HTK mel scale (peak 1), spaced evenly from fmin to fmax.

    Filters narrower than a DFT bin still get their nearest bin, so no band is empty."""

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    edges = mel_to_hz(np.linspace(hz_to_mel(np.float64(fmin)), hz_to_mel(np.float64(fmax)), bands + 2))
    bins = np.fft.rfftfreq(n_fft, 1.0 / SAMPLE_RATE)
    out = np.zeros((bands, len(bins)), np.float64)
    for i in range(bands):
        lo, mid, hi = edges[i], edges[i + 1], edges[i + 2]
        out[i] = np.clip(np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)), 0.0, None)
        if not out[i].any():
            out[i, int(np.argmin(np.abs(bins - mid)))] = 1.0
    return out.astype(np.float32)


def int8_grid(rows: np.ndarray) -> np.ndarray:
    """``rows`` [R, K] rounded to the symmetric per-row int8 grid: q * s with q = round(w / s) in [-127, 127] and
    s = max|w_row| / 127 (float32), the grid a per-output-channel int8 quantizer recovers without loss."""
    rows = np.asarray(rows, np.float32)
    peak = np.abs(rows).max(axis=1, keepdims=True)
    scale = np.where(peak > 0, peak / np.float32(127.0), np.float32(1.0)).astype(np.float32)
    return (np.clip(np.round(rows / scale), -127, 127).astype(np.float32) * scale).astype(np.float32)


class LogMel(nn.Module):
    """Fixed log-mel filterbank as two convolutions: ``[B, N] -> [B, bands, N / 64 - (window / 64 - 1)]``.

    ``dft``: a Hamming-windowed real DFT of ``window`` samples at hop 64 (cosine and sine rows, no bias); the power
    spectrum is cos^2 + sin^2; ``mel``: a 1x1 conv with the triangular mel filters (:func:`mel_filters`); then
    ``(log(power + LOGMEL_FLOOR) - center) * LOGMEL_SCALE`` (``center``: halfway between the floor and a full-scale
    tone). Grid position ``q`` reads samples ``[64 q, 64 q + window)``, so the frame ending at
    a cell's last sample reads only the past of that cell. The weights are fixed (not trained, never pruned) and
    travel in the state dict and in every binary (the card counts them in its bytes).

    Both filter sets are rounded to a symmetric per-row int8 grid (:func:`int8_grid`): quantized binaries store
    them as int8 (a quarter of the bytes) and dequantize them exactly, so their float log-mel equals this one. The
    price is dynamic range: the rounding leaks a little of every band into the others, so bands within 30 dB of a
    frame's loudest match the textbook log-mel within 0.02 (0.35 dB of power), within 40 dB within 0.06 (1 dB),
    and quieter ones read that leakage (tests/students/test_model.py). Quantizing a float filterbank only inside the binary would instead break
    parity with this model.
    """

    def __init__(self, config: StudentConfig):
        super().__init__()
        n = config.logmel_samples
        k = np.arange(n)
        freqs = np.arange(n // 2 + 1)
        # Hamming (as HTK): its ends weigh 0.08, not 0 as Hann's, so every sample of the kernel measurably moves the
        # output and the receptive field derived from the kernel is the one the numbers depend on
        window = 0.54 - 0.46 * np.cos(2 * np.pi * k / (n - 1))
        angle = 2 * np.pi * np.outer(freqs, k) / n
        rows = np.concatenate([np.cos(angle) * window, -np.sin(angle) * window])
        self.bins = len(freqs)
        self.dft = nn.Conv1d(1, 2 * self.bins, n, stride=ANCHOR_QUANTUM, bias=False)
        self.mel = nn.Conv1d(self.bins, config.logmel_bands, 1, bias=False)
        with torch.no_grad():
            self.dft.weight.copy_(torch.from_numpy(int8_grid(rows))[:, None, :])
            self.mel.weight.copy_(
                torch.from_numpy(int8_grid(mel_filters(n, config.logmel_bands)))[:, :, None]
            )
        for p in self.parameters():
            p.requires_grad_(False)
        # halfway (in log power) between the floor and a full-scale tone on a bin: |z| = sum(window) / 2
        full_scale = (window.sum() / 2.0) ** 2
        self.center = float(0.5 * (np.log(LOGMEL_FLOOR) + np.log(full_scale)))

    # training-time frequency warp factors, one per batch row (students.distill sets them around a forward pass
    # when DistillConfig.freq_warp > 0); None at inference and in every exported binary
    warp: torch.Tensor | None = None
    # training-time SpecAugment frequency masks, [B, bands] bool (DistillConfig.freq_masks): masked bands read their
    # mean over the chunk; None at inference and in every exported binary
    band_mask: torch.Tensor | None = None
    # training-time random equalizer, [B, bands] natural-log power offsets (DistillConfig.freq_eq_db) added to
    # every band's log power; None at inference and in every exported binary
    band_offset: torch.Tensor | None = None

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        z = self.dft(audio.unsqueeze(1))
        power = z[:, : self.bins].square() + z[:, self.bins :].square()
        if self.warp is not None:
            power = warp_spectrum(power, self.warp)
        log_power = torch.log(self.mel(power) + LOGMEL_FLOOR)
        if self.band_offset is not None:
            log_power = log_power + self.band_offset.unsqueeze(-1)
        out = (log_power - self.center) * LOGMEL_SCALE
        if self.band_mask is not None:
            mask = self.band_mask.unsqueeze(-1)
            out = torch.where(mask, out.mean(dim=-1, keepdim=True), out)
        return out


VTLP_CUTOFF = 0.6  # the warp's knee, as a fraction of Nyquist (Jaitly & Hinton 2013: 4 800 Hz of 8 000)


def warp_spectrum(power: torch.Tensor, alpha: torch.Tensor, cutoff: float = VTLP_CUTOFF) -> torch.Tensor:
    """Vocal tract length perturbation: ``power`` [B, F, T] (bins 0..Nyquist) with row ``b``'s frequency axis
    scaled by ``alpha[b]``, piecewise linear so that 0 and Nyquist stay fixed (Jaitly & Hinton, 2013).

    Source frequency ``f`` moves to ``alpha f`` below the knee ``f0 = cutoff * nyquist * min(alpha, 1) / alpha``
    and linearly from ``alpha f0`` to Nyquist above it (so the knee's output sits at or under ``cutoff * nyquist``);
    each output bin reads the source power at the inverse map, linearly interpolated. ``alpha > 1`` moves formants
    up (a shorter vocal tract), ``alpha < 1`` down; ``alpha == 1`` returns ``power`` unchanged.
    """
    n = power.shape[1] - 1
    a = alpha.to(power.dtype).reshape(-1, 1)
    k = torch.arange(n + 1, dtype=power.dtype, device=power.device).unsqueeze(0)
    f0 = cutoff * n * torch.clamp(a, max=1.0) / a
    knee = a * f0
    src = torch.where(k <= knee, k / a, n - (n - f0) * (n - k) / (n - knee))
    src = src.clamp(0, n)
    lo = src.floor().clamp(max=n - 1)
    frac = (src - lo).unsqueeze(-1)
    idx = lo.long().unsqueeze(-1).expand(-1, -1, power.shape[-1])
    below = power.gather(1, idx)
    above = power.gather(1, idx + 1)
    return below + frac * (above - below)


class Student(nn.Module):
    """Conv/FC student: ``forward(window [B, W]) -> [B, C]`` curves in [0, 1] (see the module docstring)."""

    def __init__(self, config: StudentConfig):
        super().__init__()
        self.config = config
        self.input_encoding = InputEncoding(config)
        self.logmel = LogMel(config) if config.frontend == "logmel" else None
        self.frontend = nn.ModuleList()
        c_in = config.logmel_bands if self.logmel is not None else 1
        for c_out, stride in zip(config.frontend_channels, config.strides):
            self.frontend.append(nn.Conv1d(c_in, c_out, kernel_size=stride, stride=stride))
            c_in = c_out
        self.context = nn.ModuleList()
        for c_out, dil in zip(config.context_channels, config.context_dilations):
            self.context.append(nn.Conv1d(c_in, c_out, kernel_size=3, dilation=dil))
            c_in = c_out
        # optional linear 1x1 projection: the head's window-wide first conv then reads `head_bottleneck` channels,
        # which cuts the per-frame head cost (and the streaming head buffer) by C_enc / head_bottleneck
        self.bottleneck = nn.Conv1d(c_in, config.head_bottleneck, 1) if config.head_bottleneck else None
        if self.bottleneck is not None:
            c_in = config.head_bottleneck
        self.head = nn.ModuleList()
        kernel = config.head_kernel
        for c_out in config.head_hidden:
            self.head.append(nn.Conv1d(c_in, c_out, kernel_size=kernel))
            c_in, kernel = c_out, 1
        self.out = nn.Conv1d(c_in, len(config.channel_names), kernel_size=kernel)
        for conv in self._trained_layers()[
            :-1
        ]:  # He init: no normalisation layers, so keep ReLU activations O(1)
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)

    # ---- time accounting (derived from the modules, never typed in) -------------------------------------------

    def _layers(self) -> list[nn.Conv1d]:
        """Every conv on the path from audio to curves, in order (the fixed log-mel DFT first, if any)."""
        neck = [self.bottleneck] if self.bottleneck is not None else []
        fixed = [self.logmel.dft] if self.logmel is not None else []
        return [*fixed, *self.frontend, *self.context, *neck, *self.head, self.out]

    def _trained_layers(self) -> list[nn.Conv1d]:
        return self._layers()[1:] if self.logmel is not None else self._layers()

    @property
    def frame_receptive_field(self) -> int:
        """Samples one raw (unsmoothed) output frame reads, composed layer by layer from kernels/strides/dilations."""
        rf, jump = 1, 1
        for conv in self._layers():
            rf += (conv.kernel_size[0] - 1) * conv.dilation[0] * jump
            jump *= conv.stride[0]
        return rf

    @property
    def hop(self) -> int:
        """Samples between consecutive output positions of the fully-convolutional pass (product of strides)."""
        jump = 1
        for conv in self._layers():
            jump *= conv.stride[0]
        return jump

    @property
    def left_context(self) -> int:
        """Samples before the anchor that the output reads (the left padding of forward_full), smoothing included."""
        return self.config.past_samples + self.config.smoothing_step

    @property
    def window_samples(self) -> int:
        """Input length of :meth:`forward`: everything one (possibly smoothed) output frame reads."""
        return self.frame_receptive_field + 2 * self.config.smoothing_step

    @property
    def receptive_field_samples(self) -> int:
        return self.window_samples

    @property
    def lookahead_samples(self) -> int:
        """Samples at or after the anchor that the output depends on (0 = causal)."""
        return self.window_samples - self.left_context

    @property
    def lookahead_ms(self) -> float:
        return samples_to_ms(self.lookahead_samples)

    def feature_names(self) -> list[str]:
        return [f"frontend.{i}" for i in range(len(self.frontend))] + [
            f"context.{i}" for i in range(len(self.context))
        ]

    def feature_receptive_field(self, name: str) -> int:
        """Samples one grid position of feature ``name`` covers (frontend layers are pooled to the 64 grid)."""
        kind, _, idx = name.partition(".")
        first = self.config.frontend_receptive_field
        if kind == "frontend" and idx.isdigit() and int(idx) < len(self.frontend):
            return first
        if kind == "context" and idx.isdigit() and int(idx) < len(self.context):
            return first + ANCHOR_QUANTUM * sum(2 * c.dilation[0] for c in list(self.context)[: int(idx) + 1])
        msg = f"student {self.config.name!r} has no feature layer {name!r}; it has {', '.join(self.feature_names())}"
        raise StudentConfigError(msg)

    # ---- computation ----------------------------------------------------------------------------------------

    def encode(
        self, audio: torch.Tensor, *, features: bool = False
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Frontend + context (+ bottleneck) over ``audio`` [B, N] (N a multiple of 64): [B, C, N/64 - sum(2d)].

        Features (if asked) are on the 64-sample grid: frontend layers are average-pooled over each 64-sample cell,
        so position ``q`` of feature ``f`` covers samples ``[64 q, 64 q + feature_receptive_field(f))``.
        """
        x = self.input_encoding(audio)
        x = self.logmel(x) if self.logmel is not None else x.unsqueeze(1)
        feats: dict[str, torch.Tensor] = {}
        for i, conv in enumerate(self.frontend):
            x = F.relu(conv(x))
            if features:
                pool = max(
                    1, ANCHOR_QUANTUM * x.shape[-1] // audio.shape[-1]
                )  # log-mel is on the grid already
                feats[f"frontend.{i}"] = x if pool == 1 else F.avg_pool1d(x, pool)
        for i, conv in enumerate(self.context):
            x = F.relu(conv(x))
            if features:
                feats[f"context.{i}"] = x
        if self.bottleneck is not None:
            x = self.bottleneck(x)
        return x, feats

    def _head_tail(self, h: torch.Tensor) -> torch.Tensor:
        for conv in list(self.head)[1:]:
            h = F.relu(conv(h))
        return torch.sigmoid(self.out(h))

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        """One window ``[B, window_samples]`` (the anchor sits ``left_context`` samples in) -> one frame [B, C]."""
        x, _ = self.encode(window)  # [B, C, 1 + 2 d / 64] head positions (1 without smoothing)
        step = self.config.smoothing_step // ANCHOR_QUANTUM
        if step:  # the head runs at the three averaged points only, stacked on the batch axis
            kernel = (self.head[0] if len(self.head) else self.out).kernel_size[0]
            x = torch.cat([x[..., i * step : i * step + kernel] for i in range(3)])
        h = F.relu(self.head[0](x)) if len(self.head) else x
        y = self._head_tail(h)[:, :, 0]  # [B, C], or [3 B, C] with smoothing
        if step:
            y = y.unflatten(0, (3, -1)).mean(dim=0)
        return y

    def forward_full(
        self,
        audio: torch.Tensor,
        anchors: torch.Tensor,
        *,
        pad: bool = True,
        return_features: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Frames at many anchors of a long signal: ``audio`` [B, N], ``anchors`` [F] or [B, F] -> [B, F, C].

        ``pad=True`` (whole utterances): zeros are added before and after, exactly as the windowed model sees an
        utterance edge. ``pad=False`` (training chunks that carry their own context): every anchor must have
        ``left_context`` samples before it and ``lookahead_samples`` after it inside ``audio``. Anchors must be
        multiples of 64. The encoder runs once; the head only at the anchors (x3 with smoothing).
        With ``return_features`` the encoder features come too, indexed from the start of the encoder input
        (``audio`` shifted by ``left_context`` when ``pad=True``; see :meth:`encode`).
        """
        anchors = torch.as_tensor(anchors, dtype=torch.int64, device=audio.device)
        if anchors.dim() == 1:
            anchors = anchors.unsqueeze(0).expand(audio.shape[0], -1)
        if bool((anchors % ANCHOR_QUANTUM != 0).any()):
            msg = f"forward_full: anchors must be multiples of {ANCHOR_QUANTUM} samples"
            raise StudentConfigError(msg)
        left, right = self.left_context, self.lookahead_samples
        if pad:
            last = int(anchors.max()) if anchors.numel() else 0
            total = max(audio.shape[-1], last + 1) + left + right
            total += -total % ANCHOR_QUANTUM
            audio = F.pad(audio, (left, total - left - audio.shape[-1]))
            anchors = anchors + left
        elif anchors.numel() and (int(anchors.min()) < left or int(anchors.max()) + right > audio.shape[-1]):
            msg = (
                f"forward_full: with pad=False every anchor needs {left} samples before and {right} after it"
            )
            raise StudentConfigError(msg)
        usable = audio.shape[-1] - audio.shape[-1] % ANCHOR_QUANTUM
        enc, feats = self.encode(audio[:, :usable], features=return_features)
        step = self.config.smoothing_step
        offsets = (-step, 0, step) if step else (0,)
        first = self.head[0] if len(self.head) else self.out
        kernel = first.kernel_size[0]
        # first head conv at the anchors only: gather [B, F*S, K, C] windows (cheap backward: index_add into enc)
        cells = (
            torch.cat([anchors + off - self.config.past_samples for off in offsets], dim=1) // ANCHOR_QUANTUM
        )
        idx = cells.unsqueeze(-1) + torch.arange(kernel, device=enc.device)
        rows = torch.arange(enc.shape[0], device=enc.device).view(-1, 1, 1)
        x = enc.transpose(1, 2)[rows, idx].flatten(2)
        weight = first.weight.permute(0, 2, 1).reshape(first.out_channels, -1)  # matches the (K, C) order
        h = (x @ weight.t() + first.bias).transpose(1, 2)  # [B, H, F*S]
        h = self._head_tail(F.relu(h)) if len(self.head) else torch.sigmoid(h)
        y = h.unflatten(2, (len(offsets), anchors.shape[1])).mean(2)  # average the smoothing offsets
        y = y.transpose(1, 2)
        return (y, feats) if return_features else y

    def binary_form(self) -> Student:
        """The model as its exported binaries compute it: input already encoded by the host (:func:`encode_input`).

        ``self`` for linear students; for ``mulaw`` ones a copy whose config says ``linear`` (its input is taken as
        it comes), so ``binary_form()(encode_input(x, config)) == self(x)``. Quantizing and exporting this form keeps the
        companding out of the int8 graph, where it belongs: the binary's int8 input levels are mu-law levels.
        """
        if self.config.input_encoding == "linear":
            return self
        twin = copy.deepcopy(self)
        twin.config = replace(self.config, input_encoding="linear")  # it takes its input as it comes
        twin.input_encoding = InputEncoding(twin.config)
        return twin

    def current_config(self) -> StudentConfig:
        """The config matching the modules as they are now (e.g. after in-place channel pruning)."""
        return replace(
            self.config,
            frontend_channels=tuple(c.out_channels for c in self.frontend),
            context_channels=tuple(c.out_channels for c in self.context),
            head_hidden=tuple(c.out_channels for c in self.head),
            head_bottleneck=self.bottleneck.out_channels if self.bottleneck is not None else 0,
        )

    @torch.no_grad()
    def warm_start_from(self, source: Student) -> str | None:
        """Start from ``source``'s weights where the layers allow; returns how (``"exact"``, ``"factorized"``) or None.

        ``"exact"``: every tensor has the same shape (e.g. realtime from small: same layers, the window just sits
        elsewhere around the anchor). ``"factorized"``: the same except that this model has a head bottleneck and
        ``source`` has none; the bottleneck and first head conv then start as the best rank-``head_bottleneck``
        approximation (truncated SVD) of ``source``'s first head conv, so the start is ``source`` minus only the
        smallest singular directions of that one layer.
        """
        mine, theirs = self.state_dict(), source.state_dict()
        if mine.keys() == theirs.keys() and all(mine[k].shape == theirs[k].shape for k in mine):
            self.load_state_dict(theirs)
            return "exact"
        if (
            self.bottleneck is None
            or source.bottleneck is not None
            or not len(self.head)
            or not len(source.head)
        ):
            return None
        rest = {k for k in mine if not k.startswith(("bottleneck.", "head.0."))}
        if rest != set(theirs) - {"head.0.weight", "head.0.bias"} or any(
            mine[k].shape != theirs[k].shape for k in rest
        ):
            return None
        w = source.head[0].weight  # [H, C, K]
        (h, c, k), r = w.shape, self.bottleneck.out_channels
        if self.head[0].weight.shape != (h, r, k) or r > c:
            return None
        u, s, vh = torch.linalg.svd(w.permute(0, 2, 1).reshape(h * k, c), full_matrices=False)
        self.load_state_dict({k_: theirs[k_] for k_ in rest}, strict=False)
        self.bottleneck.weight.copy_(vh[:r].unsqueeze(-1))  # [r, C, 1]
        self.bottleneck.bias.zero_()
        self.head[0].weight.copy_((u[:, :r] * s[:r]).reshape(h, k, r).permute(0, 2, 1))
        self.head[0].bias.copy_(source.head[0].bias)
        return "factorized"


def as_binary(model: nn.Module, *windows: np.ndarray) -> tuple[nn.Module, list[np.ndarray]]:
    """The module a binary is built from and ``windows`` as that binary takes them.

    A student with a ``mulaw`` input encoding is exported without it (``Student.binary_form``): the host applies
    ``students.model.encode_input`` (recorded in the card's ``input.encoding``), so int8 input levels are mu-law
    levels. Other models pass through unchanged."""
    if not isinstance(model, Student):
        return model, list(windows)
    return model.binary_form(), [encode_input(w, model.config) for w in windows]


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def fp32_bytes(model: nn.Module) -> int:
    return 4 * count_params(model)


def describe(model: Student) -> dict[str, Any]:
    """Sizes and timing of a student, for cards and tables."""
    return {
        "name": model.config.name,
        "params": count_params(model),  # all weights in the binary, fixed log-mel filters included
        "fixed_params": sum(p.numel() for p in model.parameters() if not p.requires_grad),
        "fp32_bytes": fp32_bytes(model),
        "window_samples": model.window_samples,
        "past_ms": samples_to_ms(model.left_context),
        "lookahead_ms": model.lookahead_ms,
        "smoothing": model.config.smoothing,
        "input_encoding": model.config.input_encoding,
        "frontend": model.config.frontend,
    }


def save_student(path: str | os.PathLike, model: Student, **extra: Any) -> None:
    """Atomically save config (as a plain dict) + state dict (+ JSON-like extras); never pickles modules."""
    config = model.current_config()
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    atomic_torch_save(
        path, {"format": CHECKPOINT_FORMAT, "config": config.to_dict(), "state_dict": state, **extra}
    )


def saved_with(path: str | os.PathLike, *, configs: dict[str, Any] | None = None, **extra: Any) -> bool:
    """Whether ``path`` is a checkpoint saved with these ``save_student`` extras (e.g. the parent's hash): a
    derived checkpoint (pruned, QAT-tuned) is reused while it was made from the same parent and settings.

    ``extra`` values must be equal; ``configs`` maps an extra's key to a config object whose ``matches(saved)``
    decides instead (so a config saved before an option existed still matches at that option's default)."""
    if not Path(path).is_file():
        return False
    saved = torch.load(path, weights_only=True)
    return all(saved.get(k) == v for k, v in extra.items()) and all(
        config.matches(saved.get(k)) for k, config in (configs or {}).items()
    )


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The raw checkpoint dict (weights_only load: plain tensors and JSON-like values only)."""
    path = Path(path)
    if not path.is_file():
        msg = f"{path}: no student checkpoint here (train one with `compress distill`)"
        raise StudentConfigError(msg)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file is a user error
        msg = f"{path}: not a readable student checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0]})"
        raise StudentConfigError(msg) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        msg = f"{path}: not a {CHECKPOINT_FORMAT} checkpoint"
        raise StudentConfigError(msg)
    return ckpt


def load_student(path: str | os.PathLike) -> Student:
    """Rebuild a student from its saved config and load its weights (eval mode)."""
    ckpt = load_checkpoint(path)
    model = Student(StudentConfig.from_dict(ckpt["config"]))
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        msg = f"{path}: weights do not match the saved config ({str(exc).splitlines()[0]})"
        raise StudentConfigError(msg) from None
    return model.eval()
