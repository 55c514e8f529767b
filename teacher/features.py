"""Teacher input features and time-grid resampling: 80-band log-mel at 100 Hz, and rate -> rig-frame alignment.

The log-mel front end follows Whisper's (25 ms Hann window, 10 ms hop, Slaney mel filters, log10 clamped to
8 decades below the clip's peak, then scaled by (x + 4) / 4) so it can be concatenated with encoder features.
Frame ``i`` of a feature sequence at ``rate`` Hz is centred at ``i / rate`` seconds. ``to_frames`` averages a
feature sequence over each rig frame's period, centred on the frame anchors of ``teacher.constants``.
"""

from __future__ import annotations

import numpy as np

from teacher.constants import SAMPLE_RATE, exact_div, frame_times

N_MELS = 80
N_FFT = 400  # 25 ms window
MEL_HOP = 160  # 10 ms hop
MEL_RATE = exact_div(SAMPLE_RATE, MEL_HOP)  # 100 Hz


def _mel_filters() -> np.ndarray:
    from faster_whisper.feature_extractor import FeatureExtractor

    return FeatureExtractor.get_mel_filters(SAMPLE_RATE, N_FFT, n_mels=N_MELS).astype(np.float32)


_FILTERS: np.ndarray | None = None


def log_mel(audio: np.ndarray) -> np.ndarray:
    """Log-mel spectrogram [ceil(n / 160), 80] float32; frame i is centred at sample 160 * i."""
    global _FILTERS
    if _FILTERS is None:
        _FILTERS = _mel_filters()
    audio = np.asarray(audio, dtype=np.float32)
    n_out = -(-len(audio) // MEL_HOP)
    padded = np.pad(audio, (N_FFT // 2, N_FFT // 2 + MEL_HOP), mode="constant")
    idx = np.arange(N_FFT)[None, :] + MEL_HOP * np.arange(n_out)[:, None]
    window = np.hanning(N_FFT + 1)[:-1].astype(np.float32)
    spec = np.abs(np.fft.rfft(padded[idx] * window, axis=1)) ** 2
    mel = spec.astype(np.float32) @ _FILTERS.T
    logm = np.log10(np.maximum(mel, 1e-10))
    logm = np.maximum(logm, logm.max() - 8.0)
    return ((logm + 4.0) / 4.0).astype(np.float32)


def to_frames(features: np.ndarray, rate: float, n_frames: int, fps: int) -> np.ndarray:
    """Average ``features`` [T, D] (frame i at i / rate s) over each rig frame's period around its anchor."""
    features = np.asarray(features, dtype=np.float32)
    t = frame_times(n_frames, fps) * rate  # anchor positions in feature-frame units
    half = 0.5 * rate / fps
    # Piecewise-constant integral of the sequence (each frame covers [i - 0.5, i + 0.5)), read at both edges.
    csum = np.concatenate([np.zeros((1, features.shape[1]), np.float64), np.cumsum(features, axis=0)])

    def integral(x: np.ndarray) -> np.ndarray:
        pos = np.clip(x + 0.5, 0.0, len(features))
        i = np.minimum(np.floor(pos).astype(np.int64), len(features) - 1)
        return csum[i] + (pos - i)[:, None] * features[i]

    lo, hi = t - half, t + half
    width = np.clip(hi + 0.5, 0, len(features)) - np.clip(lo + 0.5, 0, len(features))
    out = (integral(hi) - integral(lo)) / np.maximum(width, 1e-6)[:, None]
    return out.astype(np.float32)


def resample_curves(curves: np.ndarray, fps_from: int, n_frames: int, fps_to: int) -> np.ndarray:
    """Linearly interpolate rig curves [F, C] from ``fps_from`` anchors to ``n_frames`` anchors at ``fps_to``."""
    curves = np.asarray(curves, dtype=np.float32)
    if fps_from == fps_to and len(curves) == n_frames:
        return curves
    src = frame_times(len(curves), fps_from)
    dst = frame_times(n_frames, fps_to)
    return np.stack([np.interp(dst, src, curves[:, c]) for c in range(curves.shape[1])], axis=1).astype(
        np.float32
    )
