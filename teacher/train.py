"""Train the teacher decoder on the ``labeled`` split: augmented audio -> cached features -> MSE + velocity loss.

Each utterance gets ``augment_variants`` augmented copies besides the clean one (noise, reverb, gain,
band-limiting and speed change from ``teacher.augment``; a speed change moves the labels with the audio), seeded
by the utterance's position, so every run makes the same copies; their features are computed once and cached on
disk by audio sha256, so epochs, reruns and ablations do not re-run Whisper. Each epoch draws one variant per
utterance, crops it, masks a few spans of frames and drops input features at random: with 10 minutes of a few
clean voices the decoder otherwise memorises them (train MSE 30x below test MSE). The last ``holdout_voices``
voices are kept out of training and the epoch with the lowest loss on them is the one saved. Training state is
checkpointed atomically every ``checkpoint_every`` epochs to ``out_dir/checkpoint.pt``; a rerun with the same
config and data resumes from it and, because every epoch reseeds from ``(seed, epoch)``, ends with the same
weights as an uninterrupted run.

Outputs: ``teacher.pt`` (TeacherConfig + state dict + encoder config + training-label mean) and ``teacher.json``
(configs, training-data hash, losses, metrics on ``eval_dir`` when given).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from teacher.augment import AugmentConfig, apply_augment, draw_augment
from teacher.constants import (
    DEFAULT_FPS,
    LIP_CLOSURE_CHANNEL,
    LIP_CLOSURE_THRESHOLD,
    SUPPORTED_FPS,
    frame_anchors,
    frame_times,
    num_frames,
)
from teacher.dataset import Dataset, DatasetError, Utterance
from teacher.encoder import EncoderConfig
from teacher.features import resample_curves
from teacher.fsutil import atomic_torch_save, atomic_write_json, config_matches, sha256_file
from teacher.groundtruth import SILENCE_VISEME, VISEMES, GroundTruthConfig, curves_from_phonemes
from teacher.metrics import evaluate
from teacher.model import (
    FeatureExtractor,
    Teacher,
    TeacherConfig,
    TeacherDecoder,
    build_decoder,
    count_params,
    default_feature_cache,
)

DEFAULT_TEACHER_LAYERS = (2, 4, 6)


def _default_augment() -> AugmentConfig:
    return AugmentConfig(p_noise=0.6, p_reverb=0.35, p_gain=0.6, p_band=0.3, p_speed=0.6, speed=(0.85, 1.15))


@dataclass(frozen=True)
class TeacherTrainConfig:
    """How the teacher is trained (the architecture is ``model``)."""

    model: TeacherConfig = field(default_factory=TeacherConfig)
    # Whisper layers 2, 4 and 6 (the last), concatenated: on the default corpus this beat the last layer alone
    # on the test split (bench/bench_teacher.py's ablation measures it on every run)
    encoder: EncoderConfig = field(default_factory=lambda: EncoderConfig(layers=DEFAULT_TEACHER_LAYERS))
    epochs: int = 30
    batch_size: int = 16
    max_frames: int = 150  # random crop length during training (5 s at 30 fps)
    lr: float = 2e-3
    weight_decay: float = 1e-2
    velocity_weight: float = 2.0  # weight of the MSE between frame-to-frame differences
    closure_weight: float = 2.0  # extra loss weight on the lip-closure channel (its peaks are short)
    # Closure hinge (``closure_hinge``): weight and margin of the pull above the lip-closure threshold on the
    # frames where the ground truth's closure channel passes it. 0 turns it off (reports/bench/closure_hinge.txt:
    # W 0.1 -> test lip closure 0.79 -> 0.85 at MSE / mean 0.361 -> 0.428).
    closure_hinge_weight: float = 0.0
    closure_margin: float = 0.1
    augment_variants: int = 3  # augmented copies per utterance (0: clean audio only)
    # Multi-task: weight of a frame-wise viseme cross-entropy on the labeled utterances' phoneme timings
    # (a training-only head; pushes the decoder to recognise short bilabials). 0 turns it off.
    viseme_weight: float = 0.0
    augment: AugmentConfig = field(default_factory=_default_augment)  # noise/reverb/gain/band/speed draws
    time_masks: int = 2  # SpecAugment-style: spans of frames per crop whose features are set to the mean
    time_mask_frames: int = 10  # longest masked span
    holdout_voices: int = 1  # voices kept out of training to pick the best epoch (0: keep the last epoch)
    checkpoint_every: int = 5  # epochs
    seed: int = 0
    threads: int = 2
    cache_dir: str | None = None  # feature cache; default $FACEDISTILL_CACHE/features
    # Rate the decoder runs at (0: the dataset's). 60 on a 30 fps corpus: features are averaged over 16.7 ms
    # instead of 33 ms, training labels are recomputed from the phoneme timings at 60 fps (resampled when they
    # are not procedural ground truth), and the curves are resampled to the dataset's rate wherever they are
    # compared or written (``evaluate_teacher``, ``compress label``).
    fps: int = 0
    version: int = 2

    def __post_init__(self):
        if isinstance(self.augment, dict):
            object.__setattr__(self, "augment", AugmentConfig.from_dict(self.augment))
        if min(self.epochs, self.batch_size, self.max_frames, self.checkpoint_every, self.threads) < 1:
            msg = "TeacherTrainConfig: epochs, batch_size, max_frames, checkpoint_every, threads must be >= 1"
            raise ValueError(msg)
        if (
            self.augment_variants < 0
            or self.lr <= 0
            or min(
                self.velocity_weight,
                self.closure_weight,
                self.viseme_weight,
                self.closure_hinge_weight,
                self.closure_margin,
            )
            < 0
        ):
            msg = "TeacherTrainConfig: augment_variants >= 0, lr > 0 and loss weights >= 0 are required"
            raise ValueError(msg)
        if self.model.render_blend > 0 and self.viseme_weight <= 0:
            msg = "TeacherTrainConfig: render_blend needs the viseme head (viseme_weight > 0)"
            raise ValueError(msg)
        if self.fps and self.fps not in SUPPORTED_FPS:
            msg = (
                f"TeacherTrainConfig: fps must be 0 (the dataset's) or one of {SUPPORTED_FPS}, got {self.fps}"
            )
            raise ValueError(msg)
        if min(self.time_masks, self.holdout_voices) < 0 or self.time_mask_frames < 1:
            msg = "TeacherTrainConfig: time_masks, holdout_voices >= 0 and time_mask_frames >= 1 are required"
            raise ValueError(msg)

    def at_fps(self, fps: int) -> TeacherTrainConfig:
        """This config with the decoder at ``fps`` (0: the dataset's rate), its frame-counted settings rescaled to
        keep their length in seconds: the crop (``max_frames``) and the longest time mask (``time_mask_frames``)
        scale with the rate, the velocity weight with its square (a frame-to-frame difference at twice the rate is
        half as large, its squared error a quarter). The current values are taken to be set for ``self.fps``
        (0 read as ``DEFAULT_FPS``, the embedded corpus's rate)."""
        ratio = (fps or DEFAULT_FPS) / (self.fps or DEFAULT_FPS)
        return replace(
            self,
            fps=fps,
            max_frames=max(1, round(self.max_frames * ratio)),
            time_mask_frames=max(1, round(self.time_mask_frames * ratio)),
            velocity_weight=self.velocity_weight * ratio**2,
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["model"] = self.model.to_dict()
        d["encoder"] = self.encoder.to_dict()
        d["augment"] = self.augment.to_dict()
        return d

    def matches(self, saved: object) -> bool:
        """Whether ``saved`` (a config dict from a checkpoint) describes this config; keys added since it was
        saved read as their defaults, so an upgrade that adds an option does not restart finished training.
        ``model.render_blend`` only changes inference, so a checkpoint saved under another blend resumes."""
        if isinstance(saved, dict) and isinstance(saved.get("model"), dict):
            saved = {**saved, "model": {**saved["model"], "render_blend": self.model.render_blend}}
        return config_matches(self, saved, (KeyError, TypeError, ValueError))

    @classmethod
    def from_dict(cls, d: dict) -> TeacherTrainConfig:
        d = dict(d)
        d["model"] = TeacherConfig.from_dict(d["model"])
        d["encoder"] = EncoderConfig.from_dict(d["encoder"])
        d["augment"] = AugmentConfig.from_dict(d["augment"])
        return cls(**d)


def augment_utterance(
    u: Utterance,
    rng: np.random.Generator,
    config: TeacherTrainConfig,
    groundtruth: GroundTruthConfig | None,
    labels: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, list]:
    """An augmented copy of ``u`` (audio, labels, phonemes): noise, reverb, gain, band-limit, speed (pitch moves
    with it).

    ``labels`` are ``u``'s labels at the decoder's rate (default ``u.labels``, when that is the dataset's). A speed
    change rescales the phoneme intervals; labels are then recomputed exactly from them when the dataset's labels
    are the procedural ground truth (``groundtruth``), else time-warped by interpolation.
    """
    spec = draw_augment(rng, config.augment)
    audio, phonemes = apply_augment(u.audio, u.phonemes, spec)
    labels = (u.labels if labels is None else labels).astype(np.float32)
    if len(audio) != len(u.audio):
        n = num_frames(len(audio), config.model.fps)
        if groundtruth is not None:
            labels = curves_from_phonemes(phonemes, len(audio), fps=config.model.fps, config=groundtruth)
        else:
            t_old = frame_times(len(labels), config.model.fps)
            t_new = frame_times(n, config.model.fps) * len(u.audio) / len(audio)
            labels = np.stack([np.interp(t_new, t_old, c) for c in labels.T], axis=1)
    return audio, labels.astype(np.float32), phonemes


def labels_at_fps(
    u: Utterance, dataset_fps: int, fps: int, groundtruth: GroundTruthConfig | None
) -> np.ndarray:
    """``u``'s training labels at ``fps``: its own labels when that is the dataset's rate, else recomputed exactly
    from its phoneme timings when they are the procedural ground truth (``groundtruth``), else resampled."""
    if fps == dataset_fps:
        return u.labels.astype(np.float32)
    if groundtruth is not None:
        return curves_from_phonemes(u.phonemes, len(u.audio), fps=fps, config=groundtruth).astype(np.float32)
    return resample_curves(u.labels, dataset_fps, num_frames(len(u.audio), fps), fps)


def closure_channel(channel_names: Sequence[str], hinge_weight: float) -> int | None:
    """Index of the lip-closure channel that the closure hinge acts on: ``None`` when the hinge is off
    (``hinge_weight`` 0) or the rig has no such channel."""
    names = list(channel_names)
    return names.index(LIP_CLOSURE_CHANNEL) if hinge_weight > 0 and LIP_CLOSURE_CHANNEL in names else None


def _same_teacher(path: Path, payload: dict) -> bool:
    """Whether ``path`` is a teacher checkpoint equal to ``payload``: the same weights and label mean, and configs
    that are equal once fields missing from an older file read as their defaults."""
    if not path.is_file():
        return False
    try:
        old = torch.load(path, map_location="cpu", weights_only=True)
        same_config = TeacherConfig.from_dict(old["config"]) == TeacherConfig.from_dict(payload["config"])
        same_encoder = EncoderConfig.from_dict(old["encoder"]) == EncoderConfig.from_dict(payload["encoder"])
        a, b = old["state_dict"], payload["state_dict"]
        same_weights = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        return (
            same_config
            and same_encoder
            and same_weights
            and torch.equal(old["label_mean"], payload["label_mean"])
        )
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError):
        return False  # unreadable or another layout: rewritten


def closure_weights(channel_names: Sequence[str], closure_weight: float) -> torch.Tensor:
    """Per-channel loss weights: 1 everywhere, ``1 + closure_weight`` on the lip-closure channel (if present)."""
    weights = torch.ones(len(channel_names))
    if LIP_CLOSURE_CHANNEL in channel_names:
        weights[list(channel_names).index(LIP_CLOSURE_CHANNEL)] += closure_weight
    return weights


def closure_hinge(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    channel: int,
    margin: float,
    threshold: float = LIP_CLOSURE_THRESHOLD,
) -> torch.Tensor:
    """Squared shortfall of ``pred``'s closure channel below ``min(target, threshold + margin)``, averaged over the
    valid frames (``mask`` [B, T]) whose ``target`` closure channel exceeds ``threshold``; 0 when the batch has none.

    MSE shrinks short closure peaks toward their neighbours, under the threshold at which the lip-closure metric
    counts a bilabial as closed; this term pulls exactly those frames back over it, never above the target, and
    leaves every other frame to the reconstruction loss.
    """
    t = target[..., channel]
    on = mask.bool() & (t > threshold)
    short = torch.relu(torch.clamp(t, max=threshold + margin) - pred[..., channel]) ** 2
    return (short * on.to(pred.dtype)).sum() / on.sum().clamp(min=1)


def frame_visemes(phonemes: list, n_frames: int, fps: int) -> np.ndarray:
    """Viseme class (index into ``VISEMES``) of each frame: the phoneme whose interval holds the frame's anchor,
    silence elsewhere. Targets of the teacher's auxiliary viseme head."""
    anchors = frame_anchors(n_frames, fps)
    out = np.full(n_frames, VISEMES.index(SILENCE_VISEME), dtype=np.int64)
    for ph in phonemes:
        if ph.viseme in VISEMES:
            lo, hi = np.searchsorted(anchors, [ph.start, ph.end], side="left")
            out[lo:hi] = VISEMES.index(ph.viseme)
    return out


def dataset_hash(root: str | os.PathLike) -> str:
    """Content hash of a dataset (its shards' sha256 as listed in the manifest)."""
    ds = Dataset(root)
    h = hashlib.sha256()
    for e in ds.manifest["shards"]:
        h.update(e["sha256"].encode())
    return h.hexdigest()


def _masked_losses(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """Per-channel-weighted reconstruction MSE and (unweighted) velocity MSE over the valid frames."""
    m = mask[..., None]
    rec = ((pred - target) ** 2 * m * weights).sum() / (m.sum() * weights.sum())
    mv = (mask[:, 1:] * mask[:, :-1])[..., None]
    dv = (pred[:, 1:] - pred[:, :-1]) - (target[:, 1:] - target[:, :-1])
    vel = (dv**2 * mv).sum() / (mv.sum().clamp(min=1) * pred.shape[-1])
    return rec, vel


def _batch(items: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, ...]:
    """(features, labels, viseme targets) per clip -> padded tensors, a frame mask, visemes (-1 = no target)."""
    n = max(len(x) for x, _, _ in items)
    feats = torch.zeros(len(items), n, items[0][0].shape[1])
    labels = torch.zeros(len(items), n, items[0][1].shape[1])
    mask = torch.zeros(len(items), n)
    vis = torch.full((len(items), n), -1, dtype=torch.long)
    for i, (x, y, v) in enumerate(items):
        feats[i, : len(x)] = torch.from_numpy(x)
        labels[i, : len(y)] = torch.from_numpy(y)
        mask[i, : len(x)] = 1
        vis[i, : len(v)] = torch.from_numpy(v)
    return feats, labels, mask, vis


def _time_mask(
    x: np.ndarray, rng: np.random.Generator, config: TeacherTrainConfig, fill: np.ndarray
) -> np.ndarray:
    """SpecAugment-style time masking: ``time_masks`` random spans of features replaced by the mean."""
    if config.time_masks == 0:
        return x
    x = x.copy()
    for _ in range(config.time_masks):
        w = int(rng.integers(1, config.time_mask_frames + 1))
        s = int(rng.integers(0, max(1, len(x) - w + 1)))
        x[s : s + w] = fill
    return x


def _holdout_split(
    utts: list[Utterance], n_voices: int, n_labeled: int | None = None
) -> tuple[list[int], list[int], list[str]]:
    """Training / held-out utterance indices: the last ``n_voices`` voices (sorted), or every 8th utterance
    when the data has fewer than two voices. Held-out voices are unseen in training, like the test split's.
    Only the first ``n_labeled`` utterances (the ground-truth ones; default all) are candidates, so the best
    epoch is picked on ground truth even when pseudo-labeled utterances follow them."""
    if n_voices == 0:
        return list(range(len(utts))), [], []
    n_labeled = len(utts) if n_labeled is None else n_labeled
    voices = sorted({str(u.meta.get("voice", "")) for u in utts[:n_labeled]})
    if len(voices) > n_voices:
        held = voices[-n_voices:]
        held_idx = [i for i, u in enumerate(utts[:n_labeled]) if str(u.meta.get("voice", "")) in held]
    else:
        held, held_idx = [], list(range(7, n_labeled, 8))
    held_set = set(held_idx)
    train_idx = [i for i in range(len(utts)) if i not in held_set]
    return train_idx, held_idx, held


@torch.no_grad()
def _holdout_loss(
    decoder: TeacherDecoder, items: list[tuple[np.ndarray, ...]], weights: torch.Tensor, config
) -> float:
    """The curve loss (no viseme term) on the clean held-out utterances (whole utterances, eval mode)."""
    decoder.eval()
    total = 0.0
    for s in range(0, len(items), config.batch_size):
        x, y, mask, _ = _batch(items[s : s + config.batch_size])
        rec, vel = _masked_losses(decoder(x), y, mask, weights)
        total += float(rec + config.velocity_weight * vel) * len(x)
    decoder.train()
    return total / len(items)


def _copy(decoder: TeacherDecoder) -> dict:
    return {k: v.detach().clone() for k, v in decoder.state_dict().items()}


def _training_utterances(ds: Dataset, root: Path) -> list[Utterance]:
    utts = [u for u in ds if u.labels is not None]
    if not utts:
        msg = f"{root}: no labeled utterances to train the teacher on"
        raise DatasetError(msg)
    return utts


def member_seed(seed: int, k: int) -> int:
    """Seed of ensemble member ``k`` (member 0 keeps the run's seed, so it is the single teacher)."""
    return seed + 7919 * k


@dataclass
class _MemberData:
    variants: list  # per utterance: [(features, labels, visemes)] for the clean clip and each augmented copy
    train_idx: list[int]
    held_idx: list[int]
    n_var: int
    label_mean: np.ndarray
    data_hash: str
    # input normalisation over every training clip and variant (the same for every member)
    feat_mean: np.ndarray
    feat_std: np.ndarray


def _train_member(
    config: TeacherTrainConfig, seed: int, data: _MemberData, ckpt_path: Path
) -> tuple[dict, list, dict, float]:
    """Train one decoder from ``seed`` (resuming ``ckpt_path``); returns its best-epoch state dict, history, best
    entry and training seconds."""
    variants, train_idx, held_idx, n_var = data.variants, data.train_idx, data.held_idx, data.n_var
    data_hash = data.data_hash
    torch.manual_seed(seed)
    decoder = TeacherDecoder(config.model)
    decoder.feat_mean.copy_(torch.from_numpy(data.feat_mean))
    decoder.feat_std.copy_(torch.from_numpy(data.feat_std))
    with torch.no_grad():  # start from the predict-the-mean solution instead of 0.5 everywhere
        p = torch.from_numpy(np.clip(data.label_mean, 1e-3, 1 - 1e-3))
        decoder.head.bias.copy_(torch.log(p / (1 - p)))
    weights = closure_weights(config.model.channel_names, config.closure_weight)
    hinge_channel = closure_channel(config.model.channel_names, config.closure_hinge_weight)
    opt = torch.optim.AdamW(decoder.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = -(-len(train_idx) // config.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch, pct_start=0.1
    )

    start_epoch, history, best = 0, [], {"epoch": 0, "loss": float("inf"), "state_dict": None}
    if ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if (
            config.matches(ckpt.get("train_config"))
            and ckpt.get("data_hash") == data_hash
            and ckpt.get("member_seed", config.seed) == seed
        ):
            decoder.load_state_dict(ckpt["state_dict"])
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            start_epoch, history, best = int(ckpt["epoch"]), list(ckpt["history"]), dict(ckpt["best"])
            print(f"teacher: resuming from {ckpt_path} at epoch {start_epoch}", file=sys.stderr)

    t_train = time.time()
    for epoch in range(start_epoch, config.epochs):
        decoder.train()
        rng = np.random.default_rng([seed, 1000 + epoch])
        torch.manual_seed(seed * 100_003 + epoch)
        order = rng.permutation(train_idx)
        picks = rng.integers(0, n_var, size=len(variants))
        sums = np.zeros(2)
        bar = tqdm(range(steps_per_epoch), desc=f"teacher epoch {epoch + 1}/{config.epochs}", file=sys.stderr)
        for b in bar:
            items = []
            for i in order[b * config.batch_size : (b + 1) * config.batch_size]:
                x, y, vis = variants[i][picks[i]]
                if len(x) > config.max_frames:
                    s = int(rng.integers(0, len(x) - config.max_frames + 1))
                    x, y, vis = (a[s : s + config.max_frames] for a in (x, y, vis))
                items.append((_time_mask(x, rng, config, decoder.feat_mean.numpy()), y, vis))
            x, y, mask, vis = _batch(items)
            pred, logits = decoder.forward_with_aux(x)
            rec, vel = _masked_losses(pred, y, mask, weights)
            loss = rec + config.velocity_weight * vel
            if hinge_channel is not None:
                loss = loss + config.closure_hinge_weight * closure_hinge(
                    pred, y, mask, hinge_channel, config.closure_margin
                )
            if logits is not None and bool((vis >= 0).any()):
                ce = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), vis.reshape(-1), ignore_index=-1
                )
                loss = loss + config.viseme_weight * ce
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(decoder.parameters(), 1.0)
            opt.step()
            sched.step()
            sums += [rec.item(), vel.item()]
            bar.set_postfix(mse=f"{sums[0] / (b + 1):.4f}")
        bar.close()
        entry = {
            "epoch": epoch + 1,
            "mse": float(sums[0]) / steps_per_epoch,
            "velocity_mse": float(sums[1]) / steps_per_epoch,
        }
        if held_idx:
            entry["holdout_loss"] = _holdout_loss(
                decoder, [variants[i][0] for i in held_idx], weights, config
            )
            if entry["holdout_loss"] < best["loss"]:
                best = {"epoch": epoch + 1, "loss": entry["holdout_loss"], "state_dict": _copy(decoder)}
        history.append(entry)
        if (epoch + 1) % config.checkpoint_every == 0 or epoch + 1 == config.epochs:
            atomic_torch_save(
                ckpt_path,
                {
                    "train_config": config.to_dict(),
                    "data_hash": data_hash,
                    "member_seed": seed,
                    "epoch": epoch + 1,
                    "history": history,
                    "best": best,
                    "state_dict": decoder.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                },
            )
    train_seconds = time.time() - t_train
    if best["state_dict"] is not None:
        decoder.load_state_dict(best["state_dict"])

    return decoder.state_dict(), history, best, train_seconds


def train_teacher(
    labeled_dataset_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    config: TeacherTrainConfig = TeacherTrainConfig(),
    eval_dir: str | os.PathLike | None = None,
    pseudo_dir: str | os.PathLike | None = None,
) -> dict:
    """Train a teacher on a labeled dataset; writes ``teacher.pt`` + ``teacher.json`` to ``out_dir``; returns the card.

    ``pseudo_dir`` turns on self-training ("noisy student"): the utterances of that pseudo-labeled dataset
    (typically the unlabeled split labeled by a first-round teacher, see ``compress label``) join the
    ground-truth ones, with the same augmentation and dropout as noise. Their labels are only ever
    time-warped with the audio, never recomputed from phonemes, so no held-back ground truth leaks in; the
    held-out voice that picks the best epoch is always a ground-truth one.
    """
    root, out = Path(labeled_dataset_dir), Path(out_dir)
    torch.set_num_threads(config.threads)
    t_start = time.time()
    ds = Dataset(root)
    # what the data and the encoder dictate about the decoder's shape
    enc_dim = config.encoder.dim if config.model.features != "logmel" else config.model.encoder_dim
    derived = {"channel_names": list(ds.channel_names), "fps": config.fps or ds.fps, "encoder_dim": enc_dim,
               "aux_classes": len(VISEMES) if config.viseme_weight > 0 else 0}  # fmt: skip
    mdict = config.model.to_dict()
    if any(mdict[k] != v for k, v in derived.items()):
        config = TeacherTrainConfig.from_dict({**config.to_dict(), "model": {**mdict, **derived}})
    data_hash = dataset_hash(root)
    utts = _training_utterances(ds, root)
    n_labeled = len(utts)
    pds = None if pseudo_dir is None else Dataset(pseudo_dir)
    if pds is not None:
        if list(pds.channel_names) != list(ds.channel_names) or pds.fps != ds.fps:
            msg = f"{pseudo_dir}: channels or fps differ from {root} (relabel it with a teacher trained on {root})"
            raise DatasetError(msg)
        utts += _training_utterances(pds, Path(pseudo_dir))
        data_hash = hashlib.sha256(f"{data_hash}+{dataset_hash(pseudo_dir)}".encode()).hexdigest()

    # Features of the clean audio and of every augmented variant (cached on disk).
    extractor = FeatureExtractor(
        config.model.features,
        config.model.fps,
        encoder_config=config.encoder,
        cache_dir=config.cache_dir or default_feature_cache(),
    )
    n_var = 1 + config.augment_variants
    gt = ds.manifest.get("info", {}).get("groundtruth")
    groundtruth = (
        GroundTruthConfig.from_dict(gt) if ds.manifest.get("label_source") == "groundtruth" else None
    )
    audios, labels, visemes = [], [], []

    fps = config.model.fps

    def viseme_targets(i: int, phonemes: list, n: int) -> np.ndarray:
        # pseudo-labeled clips get none: their phoneme timings belong to the held-back ground truth
        return frame_visemes(phonemes, n, fps) if i < n_labeled and phonemes else np.full(n, -1, np.int64)

    for i, u in enumerate(utts):
        gt_i = groundtruth if i < n_labeled else None  # pseudo-labels are warped, never recomputed
        y0 = labels_at_fps(u, ds.fps, fps, gt_i)
        audios.append(u.audio)
        labels.append(y0)
        visemes.append(viseme_targets(i, u.phonemes, len(y0)))
        for v in range(1, n_var):
            a, y, phs = augment_utterance(u, np.random.default_rng([config.seed, i, v]), config, gt_i, y0)
            audios.append(a)
            labels.append(y)
            visemes.append(viseme_targets(i, phs, len(y)))
    feats: list[np.ndarray] = []
    chunk = 128  # clips per encoder call: fuller 30 s windows
    with tqdm(total=len(audios), desc="teacher features", unit="clip", file=sys.stderr) as bar:
        for s in range(0, len(audios), chunk):
            feats.extend(extractor(audios[s : s + chunk]))
            bar.update(len(audios[s : s + chunk]))
    del audios
    feat_seconds = time.time() - t_start
    variants = [
        [(feats[k], labels[k], visemes[k]) for k in range(i * n_var, (i + 1) * n_var)]
        for i in range(len(utts))
    ]
    train_idx, held_idx, held_voices = _holdout_split(utts, config.holdout_voices, n_labeled)
    # the predict-the-mean baseline stays a ground-truth statistic, with or without self-training
    label_mean = np.concatenate([labels[i * n_var] for i in train_idx if i < n_labeled]).mean(axis=0)

    members = config.model.members
    # each member trains as a one-decoder teacher of its own seed and checkpoint (member 0 is exactly the
    # single teacher: raising --ensemble later reuses a finished single teacher's checkpoint as member 0)
    member_config = replace(config, model=replace(config.model, members=1))
    all_feats = np.concatenate([f for i in train_idx for f, _, _ in variants[i]])
    data = _MemberData(
        variants, train_idx, held_idx, n_var, label_mean, data_hash,
        feat_mean=all_feats.mean(axis=0), feat_std=all_feats.std(axis=0) + 1e-5,
    )  # fmt: skip
    del all_feats
    states, histories, bests, train_seconds = [], [], [], 0.0
    for k in range(members):
        ckpt_path = out / ("checkpoint.pt" if k == 0 else f"checkpoint-{k}.pt")
        if members > 1:
            print(f"teacher: ensemble member {k + 1}/{members}", file=sys.stderr)
        state, history, best, seconds = _train_member(
            member_config, member_seed(config.seed, k), data, ckpt_path
        )
        states.append(state)
        histories.append(history)
        bests.append(best)
        train_seconds += seconds
    decoder = build_decoder(config.model)
    if members == 1:
        decoder.load_state_dict(states[0])
    else:
        for m, state in zip(decoder.members, states):
            m.load_state_dict(state)
    history, best = histories[0], bests[0]

    decoder.eval()
    payload = {
        "config": config.model.to_dict(),
        "encoder": config.encoder.to_dict(),
        "state_dict": decoder.state_dict(),
        "label_mean": torch.from_numpy(label_mean),
    }
    # a teacher.pt already holding these weights under an equal config is kept byte for byte: its hash is the
    # teacher's identity, which keys every pseudo-label, so a rerun after an upgrade that only added a config field
    # (stop 23: TeacherConfig.members) must not relabel hours of audio and invalidate every student
    if not _same_teacher(out / "teacher.pt", payload):
        atomic_torch_save(out / "teacher.pt", payload)
    teacher = Teacher.load(out / "teacher.pt")
    teacher.features.cache_dir = extractor.cache_dir  # evaluation reruns reuse the test split's features
    card = {
        "artifact": "teacher.pt",
        "sha256": sha256_file(out / "teacher.pt"),
        "config": config.to_dict(),
        "train_data": {
            "path": str(root),
            "sha256": data_hash,
            "utterances": n_labeled,
            "seconds": ds.seconds,
        },
        "self_training": None
        if pds is None
        else {"path": str(pseudo_dir), "utterances": len(utts) - n_labeled, "seconds": pds.seconds},
        "decoder_params": count_params(decoder),
        "holdout": {"voices": held_voices, "utterances": len(held_idx), "best_epoch": best["epoch"]},
        "history": history,
        "members": [
            {"seed": member_seed(config.seed, k), "best_epoch": b["epoch"], "history": h}
            for k, (b, h) in enumerate(zip(bests, histories))
        ]
        if members > 1
        else None,
        "seconds": {"features": round(feat_seconds, 1), "training": round(train_seconds, 1)},
        "metrics": {},
    }
    if eval_dir is not None:
        card["metrics"][Dataset(eval_dir).split] = evaluate_teacher(teacher, eval_dir)
    atomic_write_json(out / "teacher.json", card)
    total = time.time() - t_start
    print(
        f"teacher: {len(utts)} utterances x {n_var} variants, {config.epochs} epochs in {total:.0f} s "
        f"(features {feat_seconds:.0f} s); final train mse {history[-1]['mse']:.4f}",
        file=sys.stderr,
    )
    return card


def evaluate_teacher(teacher: Teacher, dataset_dir: str | os.PathLike, *, by: tuple[str, ...] = ()) -> dict:
    """``teacher.metrics.evaluate`` of the teacher's predictions against the dataset's truth (labels if none).

    ``by`` names utterance metadata keys (e.g. ``language``, ``voice``): the result then also holds
    ``by_<key>`` = {value: metrics of that group's utterances}, with the same mean baseline, so one can see which
    languages or voices the teacher fails on.
    """
    ds = Dataset(dataset_dir)
    utts = [u for u in ds if (u.truth if u.truth is not None else u.labels) is not None]
    if not utts:
        msg = f"{dataset_dir}: no ground truth to evaluate against"
        raise DatasetError(msg)
    preds = []
    for s in range(0, len(utts), 32):
        preds.extend(teacher.predict_batch([u.audio for u in utts[s : s + 32]]))
    truths = [u.truth if u.truth is not None else u.labels for u in utts]
    preds = [resample_curves(p, teacher.fps, len(t), ds.fps) for p, t in zip(preds, truths)]
    missing = [c for c in ds.channel_names if c not in teacher.channel_names]
    if missing:
        msg = f"{dataset_dir}: channels {missing[:3]} are not predicted by the teacher"
        raise DatasetError(msg)
    idx = [teacher.channel_names.index(c) for c in ds.channel_names]
    preds = [p[:, idx] for p in preds]
    mean = teacher.label_mean[idx] if teacher.label_mean is not None else None
    return evaluate_grouped(preds, truths, utts, ds, mean_vector=mean, by=by)


def evaluate_grouped(
    preds: list[np.ndarray],
    truths: list[np.ndarray],
    utts: list,
    ds: Dataset,
    *,
    mean_vector: np.ndarray | None,
    by: tuple[str, ...] = (),
) -> dict:
    """``teacher.metrics.evaluate`` of ``preds`` (in ``ds``'s channel order) against ``truths`` over ``utts`` of
    ``ds``, plus ``by_<key>`` = {value: summary of that group's utterances} for each metadata key in ``by``."""

    def metrics_of(keep: list[int]) -> dict:
        return evaluate(
            [preds[i] for i in keep],
            [truths[i] for i in keep],
            [utts[i].phonemes for i in keep],
            channel_names=ds.channel_names,
            fps=ds.fps,
            mean_vector=mean_vector,
        )

    out = metrics_of(list(range(len(utts))))
    for key in by:
        groups: dict[str, list[int]] = {}
        for i, u in enumerate(utts):
            groups.setdefault(str(u.meta.get(key, "?")), []).append(i)
        out[f"by_{key}"] = {g: _summary(metrics_of(keep)) for g, keep in sorted(groups.items())}
    return out


def _summary(m: dict) -> dict:
    keys = (
        "mse",
        "mse_ratio_to_mean",
        "lip_closure",
        "lip_closure_ground_truth",
        "jitter_ratio",
        "utterances",
    )
    return {k: m[k] for k in keys if k in m}


def format_groups(metrics: dict) -> str:
    """The ``by_<key>`` tables of ``evaluate_teacher(..., by=...)`` as aligned text."""
    lines = []
    for key, groups in metrics.items():
        if not key.startswith("by_"):
            continue
        lines.append(f"  {key[3:]:<16}{'utts':>6}{'mse/mean':>10}{'lip':>7}{'lip GT':>8}{'jitter':>8}")
        for g, m in groups.items():
            lines.append(
                f"  {g:<16}{m['utterances']:>6}{m['mse_ratio_to_mean']:>10.3f}{m['lip_closure']:>7.3f}"
                f"{m['lip_closure_ground_truth']:>8.3f}{m['jitter_ratio']:>8.3f}"
            )
    return "\n".join(lines)
