"""Audio and animation timing constants: every sample/frame conversion in facedistill goes through here.

16 000 / 30 and 16 000 / 60 are not integers, so rig frames cannot sit on an integer sample grid by division.
Instead frame ``k`` at ``fps`` is *anchored* at the sample ``frame_anchors()``: the exact time ``k / fps``
rounded (half up) to the nearest multiple of ``ANCHOR_QUANTUM`` samples (4 ms; error at most 2 ms, < 7 % of a 30 fps frame).
Ground-truth curves are evaluated at the anchor times, and a student's output frame for anchor ``a`` reads the
audio window ``[a - past, a + future)``. Every student's total convolution stride divides ``ANCHOR_QUANTUM``, so the
fully-convolutional training pass and the one-window export compute the very same frames.
"""

from __future__ import annotations

import math

import numpy as np

SAMPLE_RATE = 16_000  # Hz, every model input
ANCHOR_QUANTUM = 64  # samples = 4 ms; frame anchors are multiples of this
DEFAULT_FPS = 30  # rig frames per second of the default corpus and students
SUPPORTED_FPS = (30, 60)
MAX_AUDIO_SECONDS = 600.0  # longer files are refused by load_audio (stream them in chunks instead)


def exact_div(x: int, y: int) -> int:
    """x // y, refusing a remainder (as in openai/whisper)."""
    if x % y:
        msg = f"{x} is not divisible by {y}"
        raise ValueError(msg)
    return x // y


def ms_to_samples(ms: float) -> int:
    """Milliseconds to a whole number of 16 kHz samples (refuses fractions of a sample)."""
    samples = ms * SAMPLE_RATE / 1000
    if abs(samples - round(samples)) > 1e-6:
        msg = f"{ms} ms is not a whole number of samples at {SAMPLE_RATE} Hz"
        raise ValueError(msg)
    return int(round(samples))


def samples_to_ms(samples: int) -> float:
    return 1000.0 * samples / SAMPLE_RATE


def num_frames(n_samples: int, fps: int) -> int:
    """Frames whose anchor lies inside a clip of ``n_samples``: k = 0 .. ceil(n * fps / SR) - 1."""
    return max(1, math.ceil(n_samples * fps / SAMPLE_RATE))


def frame_anchors(n_frames: int, fps: int) -> np.ndarray:
    """Anchor sample of frames 0..n_frames-1 (int64): k / fps rounded (half up) to the ANCHOR_QUANTUM grid.

    Integer arithmetic, so any engine reproduces it exactly:
    anchor_k = 64 * floor((2 * k * 16000 + fps * 64) / (2 * fps * 64)).
    """
    k = np.arange(n_frames, dtype=np.int64)
    q = fps * ANCHOR_QUANTUM
    return ANCHOR_QUANTUM * ((2 * k * SAMPLE_RATE + q) // (2 * q))


def frame_times(n_frames: int, fps: int) -> np.ndarray:
    """Time in seconds of each frame anchor (what ground truth is sampled at)."""
    return frame_anchors(n_frames, fps) / SAMPLE_RATE


# The 52 ARKit blendshapes, in Apple's ARFaceAnchor order (Live Link Face CSVs swap the Left/Right pairs of jaw and
# mouth; teacher.livelink matches their columns by name).
ARKIT_52 = (
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft", "eyeSquintLeft",
    "eyeWideLeft", "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight",
    "eyeSquintRight", "eyeWideRight", "jawForward", "jawLeft", "jawRight", "jawOpen", "mouthClose",
    "mouthFunnel", "mouthPucker", "mouthLeft", "mouthRight", "mouthSmileLeft", "mouthSmileRight",
    "mouthFrownLeft", "mouthFrownRight", "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft",
    "mouthStretchRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
    "mouthPressLeft", "mouthPressRight", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft",
    "mouthUpperUpRight", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "noseSneerLeft", "noseSneerRight", "tongueOut",
)  # fmt: skip
assert len(ARKIT_52) == 52
LIP_CLOSURE_CHANNEL = "mouthClose"
# A bilabial interval counts as closed when the closure channel exceeds this in at least one frame
# (teacher.metrics.lip_closure); the students' closure hinge (students.distill) aims just above it.
LIP_CLOSURE_THRESHOLD = 0.5
