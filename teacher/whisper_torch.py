"""Whisper-base's encoder in PyTorch, built from the same CTranslate2 ``model.bin``, exposing every layer.

CTranslate2's ``encode`` only returns the encoder's last layer. Speech models keep different information at
different depths (phonetic detail tends to peak in the middle layers, the last layer is shaped for Whisper's text
decoder), so the teacher may read intermediate layers too. This module reads the ``encoder/*`` variables of
``model.bin`` (float16 in the shipped file) with ``teacher.encoder.iter_variables`` and runs
Whisper's encoder: two GELU convolutions (the second with stride 2), sinusoidal positions, ``num_layers``
pre-LayerNorm transformer blocks (fused q/k/v projection), a final LayerNorm. Computation is float32.

``hidden_states`` returns ``[embeddings, block 1, ..., block L]`` with the final LayerNorm applied to the last
one, so index ``L`` equals CTranslate2's ``encode`` output (``tests/teacher/test_whisper_torch.py`` checks it).
"""

from __future__ import annotations

import os
import re

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from teacher.encoder import iter_variables

# CTranslate2 DataType ids (include/ctranslate2/types.h)
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def read_variables(model_bin: str | os.PathLike, prefix: str = "encoder/") -> dict[str, np.ndarray]:
    """The variables of a CTranslate2 ``model.bin`` whose names start with ``prefix`` (prefix dropped), as arrays."""
    out: dict[str, np.ndarray] = {}
    for name, shape, dtype_id, data in iter_variables(model_bin, load=lambda n: n.startswith(prefix)):
        if data is None:
            continue
        if dtype_id not in _DTYPES:
            msg = f"{model_bin}: variable {name} has unsupported CTranslate2 dtype id {dtype_id}"
            raise ValueError(msg)
        out[name[len(prefix) :]] = np.frombuffer(data, dtype=_DTYPES[dtype_id]).reshape(shape)
    return out


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, ffn: int):
        super().__init__()
        self.heads = heads
        self.attn_norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn_in = nn.Linear(dim, ffn)
        self.ffn_out = nn.Linear(ffn, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (
            self.qkv(self.attn_norm(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        )
        a = F.scaled_dot_product_attention(q, k, v)
        x = x + self.out(a.transpose(1, 2).reshape(b, t, d))
        return x + self.ffn_out(F.gelu(self.ffn_in(self.ffn_norm(x))))


class WhisperEncoderTorch(nn.Module):
    """log-mel [B, 80, 3000] -> hidden states, each [B, 1500, 512] (see the module docstring)."""

    def __init__(self, variables: dict[str, np.ndarray]):
        super().__init__()
        w1, w2 = variables["conv1/weight"], variables["conv2/weight"]
        dim, n_mels, k = w1.shape
        n_layers = 1 + max(int(m.group(1)) for n in variables if (m := re.match(r"layer_(\d+)/", n)))
        heads = int(variables["num_heads"])
        ffn = variables["layer_0/ffn/linear_0/weight"].shape[0]
        self.conv1 = nn.Conv1d(n_mels, dim, k, padding=k // 2)
        self.conv2 = nn.Conv1d(dim, dim, w2.shape[2], stride=2, padding=w2.shape[2] // 2)
        self.register_buffer("positions", torch.zeros(variables["position_encodings/encodings"].shape))
        self.blocks = nn.ModuleList(_Block(dim, heads, ffn) for _ in range(n_layers))
        self.norm = nn.LayerNorm(dim)
        state = {
            "conv1.weight": w1, "conv1.bias": variables["conv1/bias"],
            "conv2.weight": w2, "conv2.bias": variables["conv2/bias"],
            "positions": variables["position_encodings/encodings"],
            "norm.weight": variables["layer_norm/gamma"], "norm.bias": variables["layer_norm/beta"],
        }  # fmt: skip
        names = {
            "attn_norm.weight": "self_attention/layer_norm/gamma", "attn_norm.bias": "self_attention/layer_norm/beta",
            "qkv.weight": "self_attention/linear_0/weight", "qkv.bias": "self_attention/linear_0/bias",
            "out.weight": "self_attention/linear_1/weight", "out.bias": "self_attention/linear_1/bias",
            "ffn_norm.weight": "ffn/layer_norm/gamma", "ffn_norm.bias": "ffn/layer_norm/beta",
            "ffn_in.weight": "ffn/linear_0/weight", "ffn_in.bias": "ffn/linear_0/bias",
            "ffn_out.weight": "ffn/linear_1/weight", "ffn_out.bias": "ffn/linear_1/bias",
        }  # fmt: skip
        for i in range(n_layers):
            for ours, theirs in names.items():
                state[f"blocks.{i}.{ours}"] = variables[f"layer_{i}/{theirs}"]
        self.load_state_dict({k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in state.items()})
        self.eval().requires_grad_(False)

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    @torch.no_grad()
    def hidden_states(self, mel: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        """``[embeddings, block 1, ..., block upto]``; the final LayerNorm is applied when ``upto`` is the last."""
        upto = self.num_layers if upto is None else upto
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel)))).transpose(1, 2)
        x = x + self.positions[: x.shape[1]]
        states = [x]
        for block in self.blocks[:upto]:
            x = block(x)
            states.append(x)
        if upto == self.num_layers:
            states[-1] = self.norm(x)
        return states
