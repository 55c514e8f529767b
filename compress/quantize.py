"""int8 quantization of students: PT2E post-training quantization, optional QAT, per-layer sensitivity.

Scheme everywhere: symmetric per-output-channel int8 weights, per-tensor int8 activations calibrated on real audio
windows. ``keep_float`` names modules (e.g. ``"head.2"``) left in float; the ONNX path passes them as
``nodes_to_exclude``, the TFLite path leaves them unannotated. When plain PTQ loses too much, ``sensitivity`` ranks
the layers by the output error their own quantization causes, and ``qat_finetune`` adapts the float weights to
quantization noise with a short fine-tune.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from students.model import as_binary
from teacher.errors import FacedistillError

WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)


class QuantizeError(FacedistillError, ValueError):
    """An invalid quantization request (unknown keep_float layer, empty calibration set, ...)."""


@dataclass(frozen=True)
class QuantizeConfig:
    """How to quantize: keep some layers float, optionally fine-tune with fake quantization first (QAT)."""

    keep_float: tuple[str, ...] = ()
    qat_steps: int = 0  # 0 = plain PTQ
    qat_lr: float = 1e-4
    qat_batch: int = 64
    seed: int = 0
    version: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "keep_float", tuple(self.keep_float))
        if self.qat_steps < 0 or self.qat_lr <= 0 or self.qat_batch < 1:
            msg = f"quantize: bad QAT settings steps={self.qat_steps} lr={self.qat_lr} batch={self.qat_batch}"
            raise QuantizeError(msg)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantizeConfig:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def weight_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Conv / linear modules by name: the layers that quantization and keep_float talk about."""
    return {name: m for name, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS)}


def in_modules(name: str, modules: tuple[str, ...]) -> bool:
    """Whether module ``name`` is one of ``modules`` or inside one of them (``"logmel.dft"`` is in ``"logmel"``)."""
    return any(name == m or name.startswith(m + ".") for m in modules)


def always_float(model: nn.Module) -> tuple[str, ...]:
    """Modules that every quantized binary of ``model`` keeps in float, whatever ``keep_float`` says: a student's
    fixed log-mel filterbank (``"logmel"``), whose power spectrum spans far more than 8 or 16 bits and whose log
    needs float. It is preprocessing, not a trained layer; cards list it under ``keep_float``."""
    return ("logmel",) if getattr(model, "logmel", None) is not None else ()


def float_layers(model: nn.Module, keep_float: tuple[str, ...]) -> list[str]:
    """The weight layers that ``keep_float`` (module names, e.g. ``"head.2"`` or ``"logmel"``) leaves in float."""
    return [name for name in weight_layers(model) if in_modules(name, keep_float)]


def check_keep_float(model: nn.Module, keep_float: tuple[str, ...]) -> None:
    layers = weight_layers(model)
    missing = [name for name in keep_float if not any(in_modules(layer, (name,)) for layer in layers)]
    if missing:
        msg = f"keep_float {missing} are not weight layers of this model; choose from {sorted(layers)}"
        raise QuantizeError(msg)


def pt2e_quantizer(keep_float: tuple[str, ...] = (), *, is_qat: bool = False) -> Any:
    """The LiteRT PT2E quantizer (per-channel symmetric int8) that leaves ``keep_float`` modules unannotated."""
    from litert_torch.quantize import pt2e_quantizer as pq

    class _KeepFloatQuantizer(pq.PT2EQuantizer):
        def _annotate_for_static_quantization_config(
            self, model: torch.fx.GraphModule
        ) -> torch.fx.GraphModule:
            def quantize_node(node: torch.fx.Node) -> bool:
                paths = [path for path, _ in node.meta.get("nn_module_stack", {}).values()]
                return not any(p == k or p.startswith(k + ".") for p in paths for k in keep_float)

            for op in self.STATIC_OPS:  # students have no batch norm: skip the conv_bn QAT patterns
                pq.OP_TO_ANNOTATOR[op](model, self.global_config, quantize_node)
            return model

    quantizer = _KeepFloatQuantizer()
    quantizer.set_global(pq.get_symmetric_quantization_config(is_per_channel=True, is_qat=is_qat))
    return quantizer


def quantize_pt2e(
    model: nn.Module, calib_windows: np.ndarray, *, keep_float: tuple[str, ...] = ()
) -> tuple[torch.fx.GraphModule, Any]:
    """PT2E PTQ: export, observe ``calib_windows`` [N, W], convert (quantize ops left unfolded for LiteRT)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if len(calib_windows) == 0:
        msg = "quantize: no calibration windows"
        raise QuantizeError(msg)
    check_keep_float(model, keep_float)
    calib = torch.as_tensor(np.asarray(calib_windows, dtype=np.float32))
    quantizer = pt2e_quantizer(keep_float)
    exported = torch.export.export(copy.deepcopy(model).eval(), (calib[:1],)).module()
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for i in range(len(calib)):
            prepared(calib[i : i + 1])
    return convert_pt2e(prepared, fold_quantize=False), quantizer


def qat_finetune(
    model: nn.Module,
    windows: np.ndarray,
    targets: np.ndarray | None = None,
    *,
    config: QuantizeConfig,
) -> nn.Module:
    """Quantization-aware fine-tune: train a fake-quantized copy, return a float model with the adapted weights.

    Targets default to the float model's own outputs (self-distillation), so no labels are needed; the returned
    model has the same architecture and is then quantized by the ordinary PTQ/export path.
    """
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    check_keep_float(model, config.keep_float)
    x = torch.as_tensor(np.asarray(windows, dtype=np.float32))
    model = model.eval()
    with torch.no_grad():
        y = model(x) if targets is None else torch.as_tensor(np.asarray(targets, dtype=np.float32))
    generator = torch.Generator().manual_seed(config.seed)
    batch = config.qat_batch  # the exported graph has a fixed batch size: every step draws exactly this many

    def draw() -> torch.Tensor:
        return torch.randint(0, len(x), (batch,), generator=generator)

    exported = torch.export.export(copy.deepcopy(model), (x[draw()],)).module()  # export shares parameters
    prepared = prepare_qat_pt2e(exported, pt2e_quantizer(config.keep_float, is_qat=True))
    with torch.no_grad():  # initialise the observers on real windows before training
        prepared(x[draw()])
    optimizer = torch.optim.Adam([p for p in prepared.parameters() if p.requires_grad], lr=config.qat_lr)
    for _ in tqdm(range(config.qat_steps), desc="qat", file=sys.stderr, leave=False):
        idx = draw()
        loss = torch.mean((prepared(x[idx]) - y[idx]) ** 2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    tuned = copy.deepcopy(model)
    trained = dict(prepared.named_parameters())
    state = {}
    for key in tuned.state_dict():
        flat = key.replace(".", "_")
        if key not in trained and flat not in trained:
            msg = f"qat: parameter {key} not found in the QAT graph (has {sorted(trained)[:6]} ...)"
            raise QuantizeError(msg)
        state[key] = trained.get(key, trained.get(flat)).detach().clone()
    tuned.load_state_dict(state)
    return tuned.eval()


def _weight_scale(w: torch.Tensor) -> torch.Tensor:
    """The symmetric per-output-channel int8 scale every exporter here derives: max |w| / 127 per row [out]."""
    return w.abs().reshape(w.shape[0], -1).amax(dim=1).clamp_min(1e-12) / 127.0


def _to_grid(w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``w`` rounded to the nearest point of the int8 grid ``scale`` (broadcast against ``w``), clamped to +-127."""
    return torch.clamp(torch.round(w / scale), -127, 127) * scale


def _fake_quant_weight(w: torch.Tensor) -> torch.Tensor:
    """Symmetric per-output-channel int8 (as the exporters do)."""
    return _to_grid(w, _weight_scale(w).view((-1,) + (1,) * (w.dim() - 1)))


def _fake_quant_activation(y: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Per-tensor asymmetric int8 over the calibrated range [lo, hi] (zero always representable)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max(hi - lo, 1e-12) / 255.0
    zero = round(-128 - lo / scale)
    return (torch.clamp(torch.round(y / scale) + zero, -128, 127) - zero) * scale


def input_sensitivity(
    model: nn.Module, calib_windows: np.ndarray, eval_windows: np.ndarray
) -> dict[str, Any]:
    """The output error of quantizing only the model's input to int8 (everything else float).

    An int8 binary quantizes its audio input per tensor over the calibrated range, whatever its layers do; no
    ``keep_float`` choice can remove this error, so it is a floor under every int8 binary of the model. Returns a
    row like :func:`sensitivity`'s with ``layer`` = ``"(input)"`` and ``params`` = 0.

    A log-mel student's binary keeps its filterbank in float (:func:`always_float`), so its audio input is float too
    (the card says so): then there is no input error and the row has ``float_input`` True and zeros.
    """
    if always_float(model):
        return {"layer": "(input)", "params": 0, "mse": 0.0, "max_abs_diff": 0.0, "float_input": True}
    model, (calib, x) = as_binary(
        model.eval(),
        np.asarray(calib_windows, dtype=np.float32),
        np.asarray(eval_windows, dtype=np.float32),
    )  # a mu-law student's binary takes companded audio: that is what gets quantized
    x = torch.as_tensor(x)
    if calib.size == 0 or len(x) == 0:
        msg = "quantize: input sensitivity needs calibration and evaluation windows"
        raise QuantizeError(msg)
    with torch.no_grad():
        reference = model(x)
        out = model(_fake_quant_activation(x, float(calib.min()), float(calib.max())))
    delta = (out - reference).double()
    return {
        "layer": "(input)",
        "params": 0,
        "mse": float(delta.pow(2).mean()),
        "max_abs_diff": float(delta.abs().max()),
    }


def sensitivity(
    model: nn.Module, calib_windows: np.ndarray, eval_windows: np.ndarray
) -> list[dict[str, Any]]:
    """Quantize one weight layer at a time (its weights and its output), rank layers by the output error caused.

    Returns one row per layer, worst first: layer, params, mse, max_abs_diff (vs the float model on
    ``eval_windows``). The top rows are the candidates for ``keep_float`` or QAT. Layers that every binary keeps in
    float (:func:`always_float`: a log-mel filterbank) are left out: no binary quantizes them.
    """
    model = model.eval()
    calib = torch.as_tensor(np.asarray(calib_windows, dtype=np.float32))
    x = torch.as_tensor(np.asarray(eval_windows, dtype=np.float32))
    fixed = always_float(model)
    layers = {name: m for name, m in weight_layers(model).items() if not in_modules(name, fixed)}
    ranges: dict[str, tuple[float, float]] = {}

    def observe(name: str):
        def hook(_module: nn.Module, _inp: Any, out: torch.Tensor) -> None:
            lo, hi = ranges.get(name, (float("inf"), float("-inf")))
            ranges[name] = (min(lo, float(out.min())), max(hi, float(out.max())))

        return hook

    handles = [m.register_forward_hook(observe(n)) for n, m in layers.items()]
    with torch.no_grad():
        model(calib)
        reference = model(x)
    for h in handles:
        h.remove()
    rows = []
    for name, layer in layers.items():
        lo, hi = ranges[name]
        original = layer.weight.data.clone()
        layer.weight.data = _fake_quant_weight(original)
        handle = layer.register_forward_hook(
            lambda _m, _i, out, lo=lo, hi=hi: _fake_quant_activation(out, lo, hi)
        )
        try:
            with torch.no_grad():
                out = model(x)
        finally:
            handle.remove()
            layer.weight.data = original
        delta = (out - reference).double()
        rows.append(
            {
                "layer": name,
                "params": sum(p.numel() for p in layer.parameters()),
                "mse": float(delta.pow(2).mean()),
                "max_abs_diff": float(delta.abs().max()),
            }
        )
    return sorted(rows, key=lambda r: r["mse"], reverse=True)


ROUNDINGS = ("nearest", "gptq")
# memo: one rounding per (weights, windows, method), shared by all exports of a model
_ROUNDED: dict[str, nn.Module] = {}


def round_weights(
    model: nn.Module,
    windows: np.ndarray,
    *,
    method: str = "gptq",
    damp: float = 0.1,
    max_columns: int = 16384,
) -> nn.Module:
    """A copy of ``model`` whose conv / linear weights lie on the symmetric per-output-channel int8 grid that every
    exporter here uses (scale = max |w| / 127 per output channel, kept exactly), rounded by ``method``:

    * ``"nearest"``: round each weight to its nearest grid point (what the exporters do by themselves);
    * ``"gptq"``: GPTQ (Frantar et al., 2023): layer by layer in forward order, round one input column at a time
      and push its rounding error onto the not-yet-rounded columns through the inverse Hessian of the layer's
      inputs, which the already-rounded layers produce on ``windows`` [N, W] (real audio windows). Layers whose
      input has more than ``max_columns`` entries (channels x kernel), and fixed (untrained) layers such as a
      log-mel filterbank, fall back to nearest rounding.

    The exporters then re-derive the same scales and round these weights to exactly these integers, so the binary
    carries the chosen rounding; parity is still measured against the original float model. With int16
    activations (a16w8) weight rounding is most of the error: reports/bench/rounding.txt (bench/bench_rounding.py)
    has a16w8 max |Δ| 0.034 -> 0.017 for the 50 %-pruned tiny and 0.017 -> 0.0047 for realtime.
    """
    if method not in ROUNDINGS:
        msg = f"quantize: unknown weight rounding {method!r}; choose from {ROUNDINGS}"
        raise QuantizeError(msg)
    x = torch.as_tensor(np.ascontiguousarray(windows, dtype=np.float32))
    if method == "gptq" and len(x) == 0:
        msg = "quantize: GPTQ weight rounding needs calibration windows"
        raise QuantizeError(msg)
    state = model.state_dict()
    digest = hashlib.sha256(f"{method} {damp} {max_columns}".encode())
    for key in sorted(state):
        digest.update(key.encode() + state[key].detach().cpu().numpy().tobytes())
    digest.update(x.numpy().tobytes() if method == "gptq" else b"")
    key = digest.hexdigest()
    if key not in _ROUNDED:
        _ROUNDED.clear()  # one model at a time is enough: exports of one model run back to back
        _ROUNDED[key] = _round(copy.deepcopy(model).eval(), x, method, damp, max_columns)
    return copy.deepcopy(_ROUNDED[key])


def _round(model: nn.Module, x: torch.Tensor, method: str, damp: float, max_columns: int) -> nn.Module:
    for layer in weight_layers(model).values():
        weight = layer.weight.detach().reshape(layer.weight.shape[0], -1).double()
        scale = _weight_scale(weight)
        # fixed layers (a log-mel filterbank) are exact math, not fitted weights: nearest rounding, no GPTQ
        gptq = method == "gptq" and layer.weight.requires_grad and weight.shape[1] <= max_columns
        hessian = _input_hessian(model, layer, x) if gptq else None
        if hessian is None:
            rounded = _to_grid(weight, scale[:, None])
        else:
            rounded = _gptq(weight, hessian, scale, damp)
            rows = torch.arange(len(weight))
            peak = weight.abs().argmax(dim=1)  # keep each row's largest weight at +-127: its scale stays put
            rounded[rows, peak] = torch.sign(weight[rows, peak]) * 127.0 * scale
        with torch.no_grad():
            layer.weight.copy_(rounded.reshape(layer.weight.shape).to(layer.weight.dtype))
    return model


def _input_hessian(
    model: nn.Module, layer: nn.Module, x: torch.Tensor, batch: int = 64
) -> torch.Tensor | None:
    """``E[a a^T]`` over the inputs ``a`` that ``layer`` sees on windows ``x`` (im2col columns for a conv), in
    float64, accumulated batch by batch; None for layer kinds that are rounded to nearest."""
    if not (isinstance(layer, nn.Conv1d) and layer.groups == 1 and layer.padding == (0,)):
        return None
    (k,), (d,), (s,) = layer.kernel_size, layer.dilation, layer.stride
    n = layer.in_channels * k
    hessian, count = torch.zeros(n, n, dtype=torch.float64), 0

    def accumulate(_module: nn.Module, inp: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        nonlocal hessian, count
        cols = F.unfold(inp[0].detach().unsqueeze(2), (1, k), dilation=(1, d), stride=(1, s))
        cols = cols.permute(1, 0, 2).reshape(n, -1).double()
        hessian += cols @ cols.t()
        count += cols.shape[1]

    handle = layer.register_forward_hook(accumulate)
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch):
                model(x[i : i + batch])
    finally:
        handle.remove()
    return hessian / max(count, 1)


def _gptq(weight: torch.Tensor, hessian: torch.Tensor, scale: torch.Tensor, damp: float) -> torch.Tensor:
    """GPTQ's column-by-column rounding of ``weight`` [out, in] on the fixed per-row grid ``scale``."""
    weight, hessian = weight.clone(), hessian.clone()
    n = weight.shape[1]
    dead = torch.diagonal(hessian) == 0  # inputs that never fire: their weights do not matter
    hessian[dead, dead] = 1.0
    hessian += damp * torch.diagonal(hessian).mean() * torch.eye(n, dtype=hessian.dtype)
    inverse = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(hessian)), upper=True)
    out = torch.zeros_like(weight)
    block = 128
    for i1 in range(0, n, block):
        i2 = min(i1 + block, n)
        w, errors, inv = weight[:, i1:i2].clone(), torch.zeros_like(weight[:, i1:i2]), inverse[i1:i2, i1:i2]
        for i in range(i2 - i1):
            q = _to_grid(w[:, i], scale)
            out[:, i1 + i] = q
            errors[:, i] = (w[:, i] - q) / inv[i, i]
            w[:, i:] -= errors[:, i : i + 1] * inv[i, i:].unsqueeze(0)
        weight[:, i2:] -= errors @ inverse[i1:i2, i2:]
    return out
