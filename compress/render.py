"""A preview video: a simple 2-D mouth driven by ARKit curves, one panel per source, with the utterance's audio.

Meant for eyeballing a student next to the teacher and the ground truth, not as a rig: the jaw drops with
``jawOpen``, the lips part by ``jawOpen - mouthClose`` plus ``mouthLowerDown*``/``mouthUpperUp*``, widen with
``mouthSmile*``/``mouthStretch*``, narrow and round with ``mouthPucker``/``mouthFunnel``; eyes follow ``eyeBlink*``.
Frames are drawn with PIL and piped as raw RGB into ffmpeg (from imageio-ffmpeg): H.264 yuv420p + AAC audio.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from teacher.constants import ARKIT_52, SAMPLE_RATE
from teacher.errors import FacedistillError
from teacher.fsutil import atomic_path

PANEL = 240  # pixels, square panel per label (even, as yuv420p needs)
SKIN, LIP, MOUTH, EYE, TEXT = (236, 200, 170), (180, 70, 80), (60, 20, 30), (40, 40, 40), (20, 20, 20)


class RenderError(FacedistillError):
    """A preview that cannot be rendered (inconsistent curves or an ffmpeg failure)."""


def _channel(curves: np.ndarray, names: list[str], *wanted: str) -> np.ndarray:
    cols = [curves[:, names.index(w)] for w in wanted if w in names]
    return np.mean(cols, axis=0) if cols else np.zeros(len(curves))


def mouth_shape(curves: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """Per-frame drawing parameters in [0, 1]-ish units from the ARKit curves [F, C]."""
    c = np.clip(np.asarray(curves, np.float64), 0.0, 1.0)
    jaw = _channel(c, names, "jawOpen")
    lower = _channel(c, names, "mouthLowerDownLeft", "mouthLowerDownRight")
    upper = _channel(c, names, "mouthUpperUpLeft", "mouthUpperUpRight")
    return {
        "jaw": jaw,
        "open": np.clip(jaw - _channel(c, names, "mouthClose"), 0, 1) + 0.4 * lower + 0.3 * upper,
        "upper": upper,
        "width": 1.0
        + 0.35 * _channel(c, names, "mouthSmileLeft", "mouthSmileRight")
        + 0.25 * _channel(c, names, "mouthStretchLeft", "mouthStretchRight")
        - 0.35 * _channel(c, names, "mouthPucker")
        - 0.25 * _channel(c, names, "mouthFunnel"),
        "round": np.clip(_channel(c, names, "mouthFunnel") + 0.5 * _channel(c, names, "mouthPucker"), 0, 1),
        "blink": _channel(c, names, "eyeBlinkLeft", "eyeBlinkRight"),
    }


def draw_panel(shape: dict[str, float], label: str) -> Image.Image:
    """One face panel for one frame's drawing parameters."""
    img = Image.new("RGB", (PANEL, PANEL), (250, 250, 250))
    d = ImageDraw.Draw(img)
    cx, s = PANEL / 2, PANEL / 240
    jaw = 22 * s * shape["jaw"]
    d.ellipse([cx - 80 * s, 40 * s, cx + 80 * s, 200 * s + jaw], fill=SKIN)
    eye_h = max(1.0, 9 * s * (1 - shape["blink"]))
    for ex in (cx - 32 * s, cx + 32 * s):
        d.ellipse([ex - 11 * s, 100 * s - eye_h, ex + 11 * s, 100 * s + eye_h], fill=EYE)
    my = 160 * s + 0.5 * jaw
    half_w = 30 * s * shape["width"]
    gap = 26 * s * shape["open"]
    xs = np.linspace(-1, 1, 24)
    bow = 1 - xs**2 * (1 - 0.5 * shape["round"])
    top = my - 3 * s - 4 * s * shape["upper"] - 0.5 * gap * bow
    bottom = my + 3 * s + 0.5 * gap * bow
    outer_top = [(cx + half_w * x, y - 7 * s * b) for x, y, b in zip(xs, top, bow)]
    outer_bottom = [(cx + half_w * x, y + 8 * s * b) for x, y, b in zip(xs[::-1], bottom[::-1], bow[::-1])]
    d.polygon(outer_top + outer_bottom, fill=LIP)
    if gap > 0.5:
        inner = [(cx + 0.9 * half_w * x, y) for x, y in zip(xs, top)]
        inner += [(cx + 0.9 * half_w * x, y) for x, y in zip(xs[::-1], bottom[::-1])]
        d.polygon(inner, fill=MOUTH)
    d.text((6, 6), label, fill=TEXT)
    return img


def render_frames(curves_by_label: dict[str, np.ndarray], channel_names: list[str]) -> np.ndarray:
    """[F, PANEL, PANEL * n_labels, 3] uint8 frames, panels side by side in the dict's order."""
    lengths = {label: len(c) for label, c in curves_by_label.items()}
    n = min(lengths.values())
    shapes = {label: mouth_shape(np.asarray(c)[:n], channel_names) for label, c in curves_by_label.items()}
    frames = np.empty((n, PANEL, PANEL * len(shapes), 3), np.uint8)
    for k in range(n):
        for j, (label, sh) in enumerate(shapes.items()):
            panel = draw_panel({key: float(v[k]) for key, v in sh.items()}, label)
            frames[k, :, j * PANEL : (j + 1) * PANEL] = np.asarray(panel)
    return frames


def render_preview(
    audio: np.ndarray,
    curves_by_label: dict[str, np.ndarray],
    fps: int,
    out_path: str | os.PathLike,
    *,
    channel_names: list[str] | tuple[str, ...] = ARKIT_52,
) -> Path:
    """Write an MP4 (H.264 + AAC) of the labelled faces side by side, driven by ``curves_by_label`` [F, C] each.

    ``audio`` is float 16 kHz mono; frames are shown at ``fps`` (frame k at time k / fps).
    """
    import imageio_ffmpeg
    import soundfile as sf

    out_path = Path(out_path)
    names = list(channel_names)
    for label, c in curves_by_label.items():
        if np.ndim(c) != 2 or np.shape(c)[1] != len(names):
            msg = f"{out_path}: curves {label!r} have shape {np.shape(c)}, expected [F, {len(names)}]"
            raise RenderError(msg)
    frames = render_frames(curves_by_label, names)
    height, width = frames.shape[1:3]
    with tempfile.TemporaryDirectory() as tmpdir, atomic_path(out_path) as tmp:
        wav = Path(tmpdir) / "audio.wav"
        sf.write(wav, np.asarray(audio, np.float32), SAMPLE_RATE, subtype="PCM_16")
        cmd = [
            imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps), "-i", "-",
            "-i", str(wav), "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
            "-f", "mp4", str(tmp),
        ]  # fmt: skip
        proc = subprocess.run(cmd, input=frames.tobytes(), capture_output=True)
        if proc.returncode != 0:
            tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            msg = f"{out_path}: ffmpeg failed: {tail[0]}"
            raise RenderError(msg)
    return out_path
