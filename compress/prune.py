"""Structured channel pruning of a student, each step followed by a short distillation fine-tune.

Torch-Pruning removes whole output channels (and the matching input channels downstream) from every conv except
the final output layer; kernels, strides and dilations never change, so the head conv that spans the window keeps
its kernel and the pruned model reads exactly the same audio window. The result is rebuilt as a fresh ``Student``
from the channel counts read back off the pruned modules, so it saves as config + state dict like any student
(no pickled modules; Torch-Pruning issues #139/#428).
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from students.model import Student, count_params
from teacher.errors import FacedistillError
from teacher.fsutil import config_matches

IMPORTANCES = ("magnitude", "taylor")


class PruneError(FacedistillError, ValueError):
    """An invalid pruning request."""


@dataclass(frozen=True)
class PruneConfig:
    """How much to prune and how to recover: ratio of channels removed per layer, scoring, fine-tune budget."""

    ratio: float = 0.5  # fraction of output channels removed from every prunable conv
    importance: str = "magnitude"  # "magnitude" (L2 of the channel group) or "taylor" (|w * dL/dw|)
    round_to: int = 8  # kept channel counts are multiples of this (SIMD-friendly); 4 for very small models
    iterative_steps: int = 1  # reach ``ratio`` in this many prune + fine-tune rounds
    finetune_steps: int = 3000  # optimizer steps after each pruning round (0 = none)
    finetune_lr: float = 1e-3
    batch_size: int = 64
    label_weight: float = 0.0  # weight of the label MSE next to the MSE to the unpruned model's outputs
    seed: int = 0
    version: int = 1

    def __post_init__(self) -> None:
        if not 0.0 < self.ratio < 1.0:
            msg = f"prune: ratio {self.ratio} must be in (0, 1)"
            raise PruneError(msg)
        if self.importance not in IMPORTANCES:
            msg = f"prune: importance {self.importance!r} not in {IMPORTANCES}"
            raise PruneError(msg)
        if self.round_to < 1 or self.iterative_steps < 1 or self.finetune_steps < 0 or self.batch_size < 1:
            msg = "prune: round_to, iterative_steps and batch_size must be >= 1, finetune_steps >= 0"
            raise PruneError(msg)
        if self.label_weight < 0 or self.finetune_lr <= 0:
            msg = "prune: label_weight must be >= 0 and finetune_lr > 0"
            raise PruneError(msg)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PruneConfig:
        return cls(**d)

    def matches(self, saved: object) -> bool:
        """Whether ``saved`` (a checkpoint's ``prune_config``) describes this config; keys added since it was saved
        read as their defaults, so a pruned checkpoint made before an option existed is still reused."""
        return config_matches(self, saved, (PruneError, TypeError))


def prune(
    model: Student,
    windows: np.ndarray,
    *,
    config: PruneConfig = PruneConfig(),
    labels: np.ndarray | None = None,
) -> Student:
    """Prune ``model`` (left untouched) and return a new, fine-tuned ``Student`` with fewer channels.

    ``windows`` [N, W] are real audio windows: they trace the graph, score channels (taylor) and drive the
    fine-tune, whose target is the unpruned model's output on them (plus ``label_weight`` x MSE to ``labels``
    [N, C] where given; NaN rows are ignored).
    """
    import torch_pruning as tp

    if config.importance == "taylor" and labels is None:
        msg = "prune: taylor importance needs labels (gradients of the label loss); use magnitude or pass labels"
        raise PruneError(msg)
    x = torch.as_tensor(np.asarray(windows, dtype=np.float32))
    if x.dim() != 2 or x.shape[1] != model.window_samples or len(x) == 0:
        msg = f"prune: windows have shape {tuple(x.shape)}, expected [N, {model.window_samples}]"
        raise PruneError(msg)
    y_label = None if labels is None else torch.as_tensor(np.asarray(labels, dtype=np.float32))
    teacher = model.eval()
    with torch.no_grad():  # in slices: one pass over 16k windows of `small` would hold GBs of activations
        y_teacher = torch.cat([teacher(part) for part in x.split(512)])
    student = copy.deepcopy(model).train()
    importance = (
        tp.importance.GroupTaylorImportance()
        if config.importance == "taylor"
        else tp.importance.GroupMagnitudeImportance(p=2)
    )
    pruner = tp.pruner.MetaPruner(
        student,
        x[:1],
        importance=importance,
        pruning_ratio=config.ratio,
        iterative_steps=config.iterative_steps,
        # the rig channels, and a fixed log-mel filterbank (exact math, not fitted channels), are never pruned
        ignored_layers=[student.out, *([student.logmel] if student.logmel is not None else [])],
        round_to=config.round_to,
    )
    generator = torch.Generator().manual_seed(config.seed)
    before = count_params(model)
    start = time.time()
    for _ in range(config.iterative_steps):
        if config.importance == "taylor":
            student.zero_grad()
            _loss(
                student, x[: config.batch_size * 4], y_teacher[: config.batch_size * 4], y_label, 0.0, 1.0
            ).backward()
        pruner.step()
        _finetune(student, x, y_teacher, y_label, config, generator)
    pruned = Student(student.current_config())
    pruned.load_state_dict(student.state_dict())
    pruned.eval()
    print(
        f"prune: {before:,} -> {count_params(pruned):,} params ({config.ratio:.0%} of channels, "
        f"{config.iterative_steps} step(s), {time.time() - start:.1f} s)",
        file=sys.stderr,
    )
    return pruned


def _loss(
    model: Student,
    x: torch.Tensor,
    y_teacher: torch.Tensor,
    y_label: torch.Tensor | None,
    teacher_weight: float,
    label_weight: float,
) -> torch.Tensor:
    out = model(x)
    loss = teacher_weight * torch.mean((out - y_teacher) ** 2)
    if y_label is not None and label_weight > 0:
        idx_label = y_label[: len(x)]
        mask = torch.isfinite(idx_label)
        loss = loss + label_weight * torch.mean(((out - torch.nan_to_num(idx_label)) ** 2)[mask])
    return loss


def _finetune(
    model: Student,
    x: torch.Tensor,
    y_teacher: torch.Tensor,
    y_label: torch.Tensor | None,
    config: PruneConfig,
    generator: torch.Generator,
) -> None:
    """Distil the unpruned model's outputs (and optionally labels) back into the pruned one."""
    if config.finetune_steps == 0:
        return
    optimizer = torch.optim.Adam(model.parameters(), lr=config.finetune_lr)
    model.train()
    bar = tqdm(range(config.finetune_steps), desc="prune fine-tune", file=sys.stderr, leave=False)
    for _ in bar:
        idx = torch.randint(0, len(x), (min(config.batch_size, len(x)),), generator=generator)
        labels = None if y_label is None else y_label[idx]
        loss = _loss(model, x[idx], y_teacher[idx], labels, 1.0, config.label_weight)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        bar.set_postfix(loss=f"{loss.item():.4g}")
    model.eval()
