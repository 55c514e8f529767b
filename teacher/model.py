"""The teacher: frozen Whisper-base features and/or log-mel -> a non-causal conv + BiGRU decoder -> rig curves.

Features are computed per utterance, averaged onto the rig-frame grid (``teacher.features.to_frames``) and
normalised with statistics of the training set kept in the checkpoint; the decoder then sees the whole
utterance in both directions. A checkpoint (``teacher.pt``) is ``{"config": TeacherConfig.to_dict(),
"state_dict": ..., "encoder": EncoderConfig.to_dict()}``; the architecture is rebuilt from the config, nothing
is pickled.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from teacher.constants import ARKIT_52, DEFAULT_FPS, SUPPORTED_FPS, num_frames
from teacher.encoder import (
    DEFAULT_ENCODER,
    ENCODER_DIM,
    ENCODER_RATE,
    EncoderConfig,
    WhisperEncoder,
    cache_root,
    encoder_identity,
)
from teacher.errors import FacedistillError
from teacher.features import MEL_RATE, N_MELS, log_mel, to_frames
from teacher.fsutil import atomic_path, sha256_file
from teacher.render import blend_rendered

FEATURE_KINDS = ("whisper", "logmel", "both")


class TeacherError(FacedistillError, ValueError):
    """A teacher checkpoint that cannot be used."""


@dataclass(frozen=True)
class TeacherConfig:
    """Architecture of the teacher decoder (everything needed to rebuild it from a state dict)."""

    features: str = "both"  # "whisper" | "logmel" | "both"
    conv_channels: int = 128
    conv_kernel: int = 5
    gru_hidden: int = 96
    gru_layers: int = 2
    dropout: float = 0.3
    input_dropout: float = 0.2  # dropout on the normalised input features (feature-level regularisation)
    encoder_dim: int = ENCODER_DIM  # width of the encoder features (512 per Whisper layer read)
    aux_classes: int = 0  # >0: a head that classifies each frame's viseme (multi-task; read by render_blend)
    # >1: that many decoders of this shape, trained from different seeds, whose curves are averaged (an ensemble;
    # reports/bench/teacher_ensemble.txt). Each member is a TeacherDecoder; the encoder features are shared.
    members: int = 1
    # >0: the curves are (1 - render_blend) x regressed + render_blend x the viseme head's posteriors rendered
    # through the ground truth's coarticulation model (teacher.render; needs aux_classes). Inference only.
    render_blend: float = 0.0
    fps: int = DEFAULT_FPS
    channel_names: tuple[str, ...] = field(default=ARKIT_52)
    version: int = 1

    def __post_init__(self):
        object.__setattr__(self, "channel_names", tuple(self.channel_names))
        if self.features not in FEATURE_KINDS:
            msg = f"TeacherConfig.features must be one of {FEATURE_KINDS}, got {self.features!r}"
            raise ValueError(msg)
        if self.fps not in SUPPORTED_FPS:
            msg = f"TeacherConfig.fps must be one of {SUPPORTED_FPS}, got {self.fps}"
            raise ValueError(msg)
        if (
            self.conv_kernel % 2 == 0
            or min(self.conv_channels, self.gru_hidden, self.gru_layers, self.members) < 1
        ):
            msg = "TeacherConfig: conv_kernel must be odd and sizes (members too) positive"
            raise ValueError(msg)
        if not (0.0 <= self.dropout < 1.0 and 0.0 <= self.input_dropout < 1.0):
            msg = "TeacherConfig: dropout and input_dropout must lie in [0, 1)"
            raise ValueError(msg)
        if not 0.0 <= self.render_blend <= 1.0:
            msg = f"TeacherConfig.render_blend must lie in [0, 1], got {self.render_blend}"
            raise ValueError(msg)
        if not self.channel_names:
            msg = "TeacherConfig.channel_names is empty"
            raise ValueError(msg)

    @property
    def input_dim(self) -> int:
        return {"whisper": self.encoder_dim, "logmel": N_MELS, "both": self.encoder_dim + N_MELS}[
            self.features
        ]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channel_names"] = list(self.channel_names)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TeacherConfig:
        return cls(**d)


class TeacherDecoder(nn.Module):
    """[B, F, D] frame-aligned features -> [B, F, C] curves in [0, 1]; sees past and future (non-causal)."""

    def __init__(self, config: TeacherConfig):
        super().__init__()
        self.config = config
        c, k = config.conv_channels, config.conv_kernel
        self.register_buffer("feat_mean", torch.zeros(config.input_dim))
        self.register_buffer("feat_std", torch.ones(config.input_dim))
        self.input_dropout = nn.Dropout(config.input_dropout)
        self.convs = nn.Sequential(
            nn.Conv1d(config.input_dim, c, k, padding=k // 2),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Conv1d(c, c, k, padding=k // 2),
            nn.GELU(),
        )
        self.gru = nn.GRU(
            c,
            config.gru_hidden,
            num_layers=config.gru_layers,
            batch_first=True,
            bidirectional=True,
            dropout=config.dropout if config.gru_layers > 1 else 0.0,
        )
        self.head = nn.Linear(2 * config.gru_hidden, len(config.channel_names))
        self.aux = nn.Linear(2 * config.gru_hidden, config.aux_classes) if config.aux_classes else None

    def normalise(self, feats: torch.Tensor) -> torch.Tensor:
        """[B, F, D] features standardised with the training set's statistics (the decoder's input)."""
        return (feats - self.feat_mean) / self.feat_std

    def hidden(self, feats: torch.Tensor) -> torch.Tensor:
        """[B, F, 2 * gru_hidden]: the BiGRU output that the output head (and the viseme head) read."""
        x = self.convs(self.input_dropout(self.normalise(feats)).transpose(1, 2)).transpose(1, 2)
        return self.gru(x)[0]

    def forward_with_aux(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Curves [B, F, C] and, when the config has ``aux_classes``, viseme logits [B, F, aux_classes]."""
        x = self.hidden(feats)
        return torch.sigmoid(self.head(x)), (self.aux(x) if self.aux is not None else None)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.forward_with_aux(feats)[0]


class TeacherEnsemble(nn.Module):
    """``config.members`` TeacherDecoders (``members.<k>.*`` in the state dict); the curves are their mean."""

    def __init__(self, config: TeacherConfig):
        super().__init__()
        self.config = config
        member = replace(config, members=1)
        self.members = nn.ModuleList(TeacherDecoder(member) for _ in range(config.members))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(feats) for m in self.members]).mean(dim=0)

    def forward_with_aux(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Mean curves and, with viseme heads, the log of the members' mean viseme posterior."""
        outs = [m.forward_with_aux(feats) for m in self.members]
        curves = torch.stack([c for c, _ in outs]).mean(dim=0)
        if outs[0][1] is None:
            return curves, None
        return curves, torch.stack([a.softmax(-1) for _, a in outs]).mean(dim=0).log()


def build_decoder(config: TeacherConfig) -> TeacherDecoder | TeacherEnsemble:
    """The decoder a config describes: one TeacherDecoder, or an ensemble of ``config.members`` of them."""
    return TeacherDecoder(config) if config.members == 1 else TeacherEnsemble(config)


def attach_render(ckpt: dict, render_ckpt: dict, blend: float) -> dict:
    """A teacher checkpoint whose curves are ``ckpt``'s decoder's, blended (``blend``) with the viseme posteriors of
    ``render_ckpt``'s decoder rendered by ``teacher.render``: the best regression teacher need not carry the viseme
    head itself (the head cost a self-trained wide decoder 15 %, reports/bench/teacher_render.txt). Both must read the
    same features from the same encoder at the same frame rate, and ``render_ckpt``'s decoder must have the head."""
    config = TeacherConfig.from_dict(ckpt["config"])
    render = TeacherConfig.from_dict(render_ckpt["config"])
    if not render.aux_classes:
        raise TeacherError("the render teacher has no viseme head (train it with --viseme-weight)")
    mismatch = [
        k
        for k in ("features", "encoder_dim", "fps", "channel_names")
        if getattr(config, k) != getattr(render, k)
    ]
    if mismatch or ckpt["encoder"] != render_ckpt["encoder"]:
        msg = f"the render teacher reads other inputs or writes other curves ({', '.join(mismatch) or 'encoder'})"
        raise TeacherError(msg)
    if not 0 < blend <= 1:
        raise TeacherError(f"render blend {blend}: must lie in (0, 1]")
    return {
        **ckpt,
        "config": replace(config, render_blend=blend).to_dict(),
        "render": {"config": render.to_dict(), "state_dict": render_ckpt["state_dict"]},
    }


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class FeatureExtractor:
    """Frame-aligned teacher inputs [F, D] for a list of clips, optionally cached on disk by audio sha256."""

    def __init__(
        self,
        kind: str,
        fps: int,
        *,
        encoder_config: EncoderConfig = DEFAULT_ENCODER,
        cache_dir: str | os.PathLike | None = None,
    ):
        self.kind, self.fps, self.encoder_config = kind, fps, encoder_config
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._encoder: WhisperEncoder | None = None

    @property
    def encoder(self) -> WhisperEncoder:
        if self._encoder is None:
            self._encoder = WhisperEncoder(self.encoder_config)
        return self._encoder

    def _key(self, audio: np.ndarray, kind: str | None = None) -> str:
        kind = kind or self.kind
        enc = encoder_identity(self.encoder_config) if kind != "logmel" else "none"
        h = hashlib.sha256(np.ascontiguousarray(audio, dtype=np.float32).tobytes())
        h.update(f"{kind}:{self.fps}:{enc}".encode())
        return h.hexdigest()

    def _cached(self, audio: np.ndarray, key: str) -> np.ndarray | None:
        """The cached features, or the matching columns of cached "both" features (ablations reuse them)."""
        path = self.cache_dir / key[:2] / f"{key}.npy"
        if path.is_file():
            return np.load(path)
        if self.kind == "both":
            return None
        both = self._key(audio, "both")
        path = self.cache_dir / both[:2] / f"{both}.npy"
        if not path.is_file():
            return None
        feats = np.load(path)
        dim = self.encoder_config.dim
        return feats[:, :dim] if self.kind == "whisper" else feats[:, dim:]

    def __call__(self, audios: list[np.ndarray]) -> list[np.ndarray]:
        out: list[np.ndarray | None] = [None] * len(audios)
        keys = [self._key(a) for a in audios] if self.cache_dir is not None else []
        if self.cache_dir is not None:
            for i, key in enumerate(keys):
                out[i] = self._cached(audios[i], key)
        todo = [i for i, o in enumerate(out) if o is None]
        if todo:
            fresh = self._compute([audios[i] for i in todo])
            for i, feats in zip(todo, fresh):
                out[i] = feats
                if self.cache_dir is not None:
                    path = self.cache_dir / keys[i][:2] / f"{keys[i]}.npy"
                    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                        np.save(fh, feats)
        return out  # type: ignore[return-value]

    def _compute(self, audios: list[np.ndarray]) -> list[np.ndarray]:
        n = [num_frames(len(a), self.fps) for a in audios]
        parts: list[list[np.ndarray]] = [[] for _ in audios]
        if self.kind in ("whisper", "both"):
            for i, f in enumerate(self.encoder.encode_batch(audios)):
                parts[i].append(to_frames(f, ENCODER_RATE, n[i], self.fps))
        if self.kind in ("logmel", "both"):
            for i, a in enumerate(audios):
                parts[i].append(to_frames(log_mel(a), MEL_RATE, n[i], self.fps))
        return [np.concatenate(p, axis=1).astype(np.float32) for p in parts]


def default_feature_cache() -> Path:
    return cache_root() / "features"


class Teacher:
    """A trained teacher: ``predict(audio) -> [F, C]`` curves at ``fps`` for 16 kHz audio of any length."""

    def __init__(
        self,
        config: TeacherConfig,
        decoder: TeacherDecoder | TeacherEnsemble,
        *,
        encoder_config: EncoderConfig = DEFAULT_ENCODER,
        identity: str = "untrained",
        label_mean: np.ndarray | None = None,
        render_decoder: TeacherDecoder | TeacherEnsemble | None = None,
    ):
        self.config = config
        # where the render blend reads viseme posteriors: a second decoder carried in the checkpoint (attach_render),
        # else this decoder's own head
        self.render_decoder = render_decoder.eval() if render_decoder is not None else None
        heads = render_decoder.config.aux_classes if render_decoder is not None else config.aux_classes
        if config.render_blend > 0 and not heads:
            msg = "a teacher with render_blend > 0 needs the viseme head (train it with --viseme-weight)"
            raise TeacherError(msg)
        self.label_mean = label_mean  # mean of the training labels: the predict-the-mean baseline
        self.decoder = decoder.eval()
        self.features = FeatureExtractor(config.features, config.fps, encoder_config=encoder_config)
        self.identity = identity

    @property
    def fps(self) -> int:
        return self.config.fps

    @property
    def channel_names(self) -> list[str]:
        return list(self.config.channel_names)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Teacher:
        path = Path(path)
        if path.is_dir():
            path = path / "teacher.pt"
        if not path.is_file():
            msg = f"{path}: no teacher checkpoint here (train one with `compress teacher train`)"
            raise TeacherError(msg)
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            config = TeacherConfig.from_dict(ckpt["config"])
            decoder = build_decoder(config)
            decoder.load_state_dict(ckpt["state_dict"])
            enc = EncoderConfig.from_dict(ckpt["encoder"])
            mean = ckpt.get("label_mean")
            if config.features != "logmel" and enc.dim != config.encoder_dim:
                raise ValueError(f"encoder gives {enc.dim}-d features, decoder expects {config.encoder_dim}")
            render = None
            if "render" in ckpt:
                render = build_decoder(TeacherConfig.from_dict(ckpt["render"]["config"]))
                render.load_state_dict(ckpt["render"]["state_dict"])
        except (RuntimeError, KeyError, TypeError, ValueError) as exc:
            msg = f"{path}: not a usable teacher checkpoint ({str(exc).splitlines()[0]})"
            raise TeacherError(msg) from None
        label_mean = None if mean is None else mean.numpy()
        return cls(
            config, decoder, encoder_config=enc, identity=sha256_file(path), label_mean=label_mean,
            render_decoder=render,
        )  # fmt: skip

    def size(self) -> dict:
        """Decoder params/bytes, plus the frozen encoder's when Whisper features are used."""
        params = count_params(self.decoder)
        if self.render_decoder is not None:
            params += count_params(self.render_decoder)
        out = {"decoder_params": params, "decoder_bytes_fp32": 4 * params}
        if self.config.features != "logmel":
            out.update(self.features.encoder.size())
        return out

    @torch.no_grad()
    def predict_batch(self, audios: list[np.ndarray]) -> list[np.ndarray]:
        """Curves [num_frames(n_i, fps), C] for each clip (features for the whole list are packed together)."""
        feats = self.features(audios)
        blend = self.config.render_blend
        if not blend:
            return [self.decoder(torch.from_numpy(f)[None])[0].numpy() for f in feats]
        out = []
        for f in feats:
            x = torch.from_numpy(f)[None]
            if self.render_decoder is None:
                curves, logits = self.decoder.forward_with_aux(x)
            else:
                curves, logits = self.decoder(x), self.render_decoder.forward_with_aux(x)[1]
            posteriors = logits[0].softmax(-1).numpy()
            out.append(blend_rendered(curves[0].numpy(), posteriors, self.fps, self.channel_names, blend))
        return out

    def predict(self, audio: np.ndarray) -> np.ndarray:
        return self.predict_batch([audio])[0]
