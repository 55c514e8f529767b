"""Train the teacher decoder on the ``labeled`` split: augmented audio -> cached features -> MSE + velocity loss.

Each utterance gets ``augment_variants`` noisy/gain-changed copies besides the clean one (seeded by the
utterance's position, so every run makes the same copies); their features are computed once and cached on
disk by audio sha256, so epochs, reruns and ablations do not re-run Whisper. Each epoch draws one variant per
utterance. Training state is checkpointed atomically every ``checkpoint_every`` epochs to
``out_dir/checkpoint.pt``; a rerun with the same config and data resumes from it and, because every epoch
reseeds from ``(seed, epoch)``, ends with the same weights as an uninterrupted run.

Outputs: ``teacher.pt`` (TeacherConfig + state dict + encoder config + training-label mean) and ``teacher.json``
(configs, training-data hash, losses, metrics on ``eval_dir`` when given).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from teacher.dataset import Dataset, DatasetError, Utterance
from teacher.encoder import EncoderConfig
from teacher.features import resample_curves
from teacher.fsutil import atomic_torch_save, atomic_write_json, sha256_file
from teacher.metrics import evaluate
from teacher.model import (
    FeatureExtractor,
    Teacher,
    TeacherConfig,
    TeacherDecoder,
    count_params,
    default_feature_cache,
)


@dataclass(frozen=True)
class TeacherTrainConfig:
    """How the teacher is trained (the architecture is ``model``)."""

    model: TeacherConfig = field(default_factory=TeacherConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    epochs: int = 40
    batch_size: int = 16
    max_frames: int = 300  # random crop length during training (10 s at 30 fps)
    lr: float = 2e-3
    weight_decay: float = 1e-4
    velocity_weight: float = 2.0  # weight of the MSE between frame-to-frame differences
    augment_variants: int = 2  # augmented copies per utterance (0: clean audio only)
    gain_db: tuple[float, float] = (-12.0, 6.0)
    snr_db: tuple[float, float] = (5.0, 40.0)
    checkpoint_every: int = 5  # epochs
    seed: int = 0
    threads: int = 2
    cache_dir: str | None = None  # feature cache; default $FACEDISTILL_CACHE/features
    version: int = 1

    def __post_init__(self):
        object.__setattr__(self, "gain_db", tuple(self.gain_db))
        object.__setattr__(self, "snr_db", tuple(self.snr_db))
        if min(self.epochs, self.batch_size, self.max_frames, self.checkpoint_every, self.threads) < 1:
            msg = "TeacherTrainConfig: epochs, batch_size, max_frames, checkpoint_every, threads must be >= 1"
            raise ValueError(msg)
        if self.augment_variants < 0 or self.lr <= 0 or self.velocity_weight < 0:
            msg = "TeacherTrainConfig: augment_variants >= 0, lr > 0 and velocity_weight >= 0 are required"
            raise ValueError(msg)
        if self.gain_db[0] > self.gain_db[1] or self.snr_db[0] > self.snr_db[1]:
            msg = "TeacherTrainConfig: gain_db and snr_db are (low, high) ranges"
            raise ValueError(msg)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["model"] = self.model.to_dict()
        d["encoder"] = self.encoder.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TeacherTrainConfig:
        d = dict(d)
        d["model"] = TeacherConfig.from_dict(d["model"])
        d["encoder"] = EncoderConfig.from_dict(d["encoder"])
        return cls(**d)


def augment(audio: np.ndarray, rng: np.random.Generator, config: TeacherTrainConfig) -> np.ndarray:
    """Random gain and additive white noise at a random SNR (what microphones and rooms do to speech)."""
    gain = 10 ** (rng.uniform(*config.gain_db) / 20)
    out = audio.astype(np.float64) * gain
    rms = np.sqrt(np.mean(out**2)) + 1e-8
    snr = rng.uniform(*config.snr_db)
    out += rng.standard_normal(len(out)) * rms / 10 ** (snr / 20)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def dataset_hash(root: str | os.PathLike) -> str:
    """Content hash of a dataset (its shards' sha256 as listed in the manifest)."""
    ds = Dataset(root)
    h = hashlib.sha256()
    for e in ds.manifest["shards"]:
        h.update(e["sha256"].encode())
    return h.hexdigest()


def _masked_losses(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    m = mask[..., None]
    rec = ((pred - target) ** 2 * m).sum() / (m.sum() * pred.shape[-1])
    mv = (mask[:, 1:] * mask[:, :-1])[..., None]
    dv = (pred[:, 1:] - pred[:, :-1]) - (target[:, 1:] - target[:, :-1])
    vel = (dv**2 * mv).sum() / (mv.sum().clamp(min=1) * pred.shape[-1])
    return rec, vel


def _batch(items: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, ...]:
    n = max(len(x) for x, _ in items)
    feats = torch.zeros(len(items), n, items[0][0].shape[1])
    labels = torch.zeros(len(items), n, items[0][1].shape[1])
    mask = torch.zeros(len(items), n)
    for i, (x, y) in enumerate(items):
        feats[i, : len(x)] = torch.from_numpy(x)
        labels[i, : len(y)] = torch.from_numpy(y)
        mask[i, : len(x)] = 1
    return feats, labels, mask


def _training_utterances(ds: Dataset, root: Path) -> list[Utterance]:
    utts = [u for u in ds if u.labels is not None]
    if not utts:
        msg = f"{root}: no labeled utterances to train the teacher on"
        raise DatasetError(msg)
    return utts


def train_teacher(
    labeled_dataset_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    config: TeacherTrainConfig = TeacherTrainConfig(),
    eval_dir: str | os.PathLike | None = None,
) -> dict:
    """Train a teacher on a labeled dataset; writes ``teacher.pt`` + ``teacher.json`` to ``out_dir``; returns the card."""
    root, out = Path(labeled_dataset_dir), Path(out_dir)
    torch.set_num_threads(config.threads)
    t_start = time.time()
    ds = Dataset(root)
    if tuple(ds.channel_names) != config.model.channel_names or ds.fps != config.model.fps:
        mcfg = TeacherConfig.from_dict(
            {**config.model.to_dict(), "channel_names": ds.channel_names, "fps": ds.fps}
        )
        config = TeacherTrainConfig.from_dict({**config.to_dict(), "model": mcfg.to_dict()})
    data_hash = dataset_hash(root)
    utts = _training_utterances(ds, root)

    # Features of the clean audio and of every augmented variant (cached on disk).
    extractor = FeatureExtractor(
        config.model.features,
        config.model.fps,
        encoder_config=config.encoder,
        cache_dir=config.cache_dir or default_feature_cache(),
    )
    n_var = 1 + config.augment_variants
    audios = []
    for i, u in enumerate(utts):
        audios.append(u.audio)
        for v in range(1, n_var):
            audios.append(augment(u.audio, np.random.default_rng([config.seed, i, v]), config))
    feats: list[np.ndarray] = []
    chunk = 128  # clips per encoder call: fuller 30 s windows
    with tqdm(total=len(audios), desc="teacher features", unit="clip", file=sys.stderr) as bar:
        for s in range(0, len(audios), chunk):
            feats.extend(extractor(audios[s : s + chunk]))
            bar.update(len(audios[s : s + chunk]))
    feat_seconds = time.time() - t_start
    variants = [[feats[i * n_var + v] for v in range(n_var)] for i in range(len(utts))]
    labels = [u.labels.astype(np.float32) for u in utts]
    label_mean = np.concatenate(labels).mean(axis=0)

    torch.manual_seed(config.seed)
    decoder = TeacherDecoder(config.model)
    all_feats = np.concatenate(feats)
    decoder.feat_mean.copy_(torch.from_numpy(all_feats.mean(axis=0)))
    decoder.feat_std.copy_(torch.from_numpy(all_feats.std(axis=0) + 1e-5))
    with torch.no_grad():  # start from the predict-the-mean solution instead of 0.5 everywhere
        p = torch.from_numpy(np.clip(label_mean, 1e-3, 1 - 1e-3))
        decoder.head.bias.copy_(torch.log(p / (1 - p)))
    opt = torch.optim.AdamW(decoder.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = -(-len(utts) // config.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch, pct_start=0.1
    )

    ckpt_path = out / "checkpoint.pt"
    start_epoch, history = 0, []
    if ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if ckpt.get("train_config") == config.to_dict() and ckpt.get("data_hash") == data_hash:
            decoder.load_state_dict(ckpt["state_dict"])
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            start_epoch, history = int(ckpt["epoch"]), list(ckpt["history"])
            print(f"teacher: resuming from {ckpt_path} at epoch {start_epoch}", file=sys.stderr)

    t_train = time.time()
    for epoch in range(start_epoch, config.epochs):
        decoder.train()
        rng = np.random.default_rng([config.seed, 1000 + epoch])
        torch.manual_seed(config.seed * 100_003 + epoch)
        order = rng.permutation(len(utts))
        picks = rng.integers(0, n_var, size=len(utts))
        sums = np.zeros(2)
        bar = tqdm(range(steps_per_epoch), desc=f"teacher epoch {epoch + 1}/{config.epochs}", file=sys.stderr)
        for b in bar:
            items = []
            for i in order[b * config.batch_size : (b + 1) * config.batch_size]:
                x, y = variants[i][picks[i]], labels[i]
                if len(x) > config.max_frames:
                    s = int(rng.integers(0, len(x) - config.max_frames + 1))
                    x, y = x[s : s + config.max_frames], y[s : s + config.max_frames]
                items.append((x, y))
            x, y, mask = _batch(items)
            rec, vel = _masked_losses(decoder(x), y, mask)
            loss = rec + config.velocity_weight * vel
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(decoder.parameters(), 1.0)
            opt.step()
            sched.step()
            sums += [rec.item(), vel.item()]
            bar.set_postfix(mse=f"{sums[0] / (b + 1):.4f}")
        bar.close()
        history.append(
            {
                "epoch": epoch + 1,
                "mse": float(sums[0]) / steps_per_epoch,
                "velocity_mse": float(sums[1]) / steps_per_epoch,
            }
        )
        if (epoch + 1) % config.checkpoint_every == 0 or epoch + 1 == config.epochs:
            atomic_torch_save(
                ckpt_path,
                {
                    "train_config": config.to_dict(),
                    "data_hash": data_hash,
                    "epoch": epoch + 1,
                    "history": history,
                    "state_dict": decoder.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                },
            )
    train_seconds = time.time() - t_train

    decoder.eval()
    atomic_torch_save(
        out / "teacher.pt",
        {
            "config": config.model.to_dict(),
            "encoder": config.encoder.to_dict(),
            "state_dict": decoder.state_dict(),
            "label_mean": torch.from_numpy(label_mean),
        },
    )
    teacher = Teacher.load(out / "teacher.pt")
    card = {
        "artifact": "teacher.pt",
        "sha256": sha256_file(out / "teacher.pt"),
        "config": config.to_dict(),
        "train_data": {
            "path": str(root),
            "sha256": data_hash,
            "utterances": len(utts),
            "seconds": ds.seconds,
        },
        "decoder_params": count_params(decoder),
        "history": history,
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


def evaluate_teacher(teacher: Teacher, dataset_dir: str | os.PathLike) -> dict:
    """``teacher.metrics.evaluate`` of the teacher's predictions against the dataset's truth (labels if none)."""
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
    return evaluate(
        preds,
        truths,
        [u.phonemes for u in utts],
        channel_names=ds.channel_names,
        fps=ds.fps,
        mean_vector=mean,
    )
