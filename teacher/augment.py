"""Audio augmentation that keeps the ground truth exact: noise, reverb, gain, band-limiting and speed change.

An augmentation is drawn as a small JSON-able ``spec`` (``draw_augment``) and applied by ``apply_augment``;
the spec carries its own noise seed, so the same spec always gives the same audio. Noise, reverb, gain and
band-limiting do not move the mouth, so the phoneme intervals are unchanged. A speed change resamples the audio
with soxr and scales every phoneme boundary by the exact length ratio (``round(b * n_new / n_old)``); the caller
recomputes the ground truth from the scaled intervals.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import scipy.signal
import soxr

from teacher.constants import SAMPLE_RATE
from teacher.errors import FacedistillError


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of each augmentation (each one is drawn independently)."""

    version: int = 1
    p_noise: float = 0.5
    snr_db: tuple[float, float] = (5.0, 30.0)
    p_reverb: float = 0.3
    rt60_s: tuple[float, float] = (0.15, 0.7)
    wet: tuple[float, float] = (0.2, 0.6)
    p_gain: float = 0.5
    gain_db: tuple[float, float] = (-18.0, 3.0)
    p_band: float = 0.25
    lowpass_hz: tuple[float, float] = (2500.0, 6000.0)
    p_speed: float = 0.3
    speed: tuple[float, float] = (0.88, 1.12)

    def __post_init__(self) -> None:
        for name in ("p_noise", "p_reverb", "p_gain", "p_band", "p_speed"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                msg = f"AugmentConfig: {name} must lie in [0, 1], got {getattr(self, name)}"
                raise FacedistillError(msg)
        if not 0.5 <= self.speed[0] <= self.speed[1] <= 2.0:
            msg = f"AugmentConfig: speed range {self.speed} must satisfy 0.5 <= low <= high <= 2"
            raise FacedistillError(msg)
        if not 0 < self.lowpass_hz[0] <= self.lowpass_hz[1] < SAMPLE_RATE / 2:
            msg = (
                f"AugmentConfig: lowpass_hz {self.lowpass_hz} must lie below Nyquist ({SAMPLE_RATE // 2} Hz)"
            )
            raise FacedistillError(msg)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AugmentConfig:
        return replace(cls(), **{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def draw_augment(rng: np.random.Generator, config: AugmentConfig = AugmentConfig()) -> dict[str, Any]:
    """Draw one augmentation spec (empty dict = clean audio)."""

    def uniform(lo_hi: tuple[float, float]) -> float:
        return round(float(rng.uniform(*lo_hi)), 4)

    spec: dict[str, Any] = {}
    if rng.random() < config.p_speed:
        spec["speed"] = uniform(config.speed)
    if rng.random() < config.p_band:
        spec["band"] = "telephone" if rng.random() < 0.4 else "lowpass"
        spec["cutoff_hz"] = 3400.0 if spec["band"] == "telephone" else uniform(config.lowpass_hz)
    if rng.random() < config.p_reverb:
        spec["reverb_rt60_s"] = uniform(config.rt60_s)
        spec["reverb_wet"] = uniform(config.wet)
    if rng.random() < config.p_noise:
        spec["noise"] = "pink" if rng.random() < 0.5 else "white"
        spec["snr_db"] = uniform(config.snr_db)
    if rng.random() < config.p_gain:
        spec["gain_db"] = uniform(config.gain_db)
    if spec:
        spec["seed"] = int(rng.integers(0, 2**31 - 1))
    return spec


def describe(spec: dict[str, Any]) -> str:
    """A short human-readable description such as ``speed 1.05, pink noise 12.0 dB``."""
    parts = []
    if "speed" in spec:
        parts.append(f"speed {spec['speed']}")
    if "band" in spec:
        parts.append(f"{spec['band']} {spec['cutoff_hz']:.0f} Hz")
    if "reverb_rt60_s" in spec:
        parts.append(f"reverb rt60 {spec['reverb_rt60_s']} s")
    if "noise" in spec:
        parts.append(f"{spec['noise']} noise {spec['snr_db']} dB")
    if "gain_db" in spec:
        parts.append(f"gain {spec['gain_db']} dB")
    return ", ".join(parts) or "clean"


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """1/f noise by shaping white noise in the frequency domain (unit variance)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spectrum), dtype=np.float64)
    f[0] = 1.0
    noise = np.fft.irfft(spectrum / np.sqrt(f), n)
    return noise / (noise.std() + 1e-12)


def reverb_ir(rt60_s: float, rng: np.random.Generator) -> np.ndarray:
    """Synthetic room impulse response: a direct path plus exponentially decaying noise (-60 dB at rt60)."""
    n = int(rt60_s * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * np.exp(-6.908 * t / rt60_s)  # ln(1000) = 6.908: -60 dB at rt60
    tail[: int(0.003 * SAMPLE_RATE)] = 0.0  # first reflections arrive after ~3 ms
    ir = tail / (np.sqrt(np.sum(tail**2)) + 1e-12)
    ir[0] = 1.0
    return ir


def change_speed(audio: np.ndarray, phonemes: list, speed: float) -> tuple[np.ndarray, list]:
    """Play ``speed`` times faster (pitch shifts with it); every boundary scales by the exact length ratio."""
    out = soxr.resample(audio, SAMPLE_RATE * speed, SAMPLE_RATE, quality="HQ").astype(np.float32)
    n_old, n_new = len(audio), len(out)

    def scale(b: int) -> int:
        return (2 * b * n_new + n_old) // (2 * n_old)

    scaled = [replace(p, start=scale(p.start), end=scale(p.end)) for p in phonemes]
    return out, [p for p in scaled if p.end > p.start]


def apply_augment(audio: np.ndarray, phonemes: list, spec: dict[str, Any]) -> tuple[np.ndarray, list]:
    """Apply a spec from ``draw_augment``; returns float32 audio in [-1, 1] and (possibly rescaled) phonemes."""
    if not spec:
        return audio, phonemes
    rng = np.random.default_rng(spec["seed"])
    x = np.asarray(audio, dtype=np.float64)
    if "speed" in spec:
        y, phonemes = change_speed(x.astype(np.float32), phonemes, spec["speed"])
        x = y.astype(np.float64)
    if "band" in spec:
        if spec["band"] == "telephone":
            sos = scipy.signal.butter(
                6, (300.0, spec["cutoff_hz"]), btype="bandpass", fs=SAMPLE_RATE, output="sos"
            )
        else:
            sos = scipy.signal.butter(8, spec["cutoff_hz"], btype="lowpass", fs=SAMPLE_RATE, output="sos")
        x = scipy.signal.sosfilt(sos, x)
    if "reverb_rt60_s" in spec:
        wet = scipy.signal.fftconvolve(x, reverb_ir(spec["reverb_rt60_s"], rng))[: len(x)]
        wet *= np.sqrt(np.mean(x**2) / (np.mean(wet**2) + 1e-12))
        x = (1 - spec["reverb_wet"]) * x + spec["reverb_wet"] * wet
    if "noise" in spec:
        noise = pink_noise(len(x), rng) if spec["noise"] == "pink" else rng.standard_normal(len(x))
        power = np.mean(x**2)
        x = x + noise * np.sqrt(power / 10 ** (spec["snr_db"] / 10))
    if "gain_db" in spec:
        x = x * 10 ** (spec["gain_db"] / 20)
    peak = np.max(np.abs(x)) if len(x) else 0.0
    if peak > 0.99:  # never clip: scale the whole utterance down instead
        x = x * (0.99 / peak)
    return x.astype(np.float32), phonemes
