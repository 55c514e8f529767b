"""Quantization: the sensitivity report finds the layer that quantizes worst; QAT keeps the architecture."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from toy_models import speechlike, tiny_student, toy_split

from compress.quantize import (
    QuantizeConfig,
    QuantizeError,
    input_sensitivity,
    qat_finetune,
    quantize_pt2e,
    round_weights,
    sensitivity,
    weight_layers,
)


@pytest.mark.parametrize("layer", ["context.0", "head.0", "out"])
def test_sensitivity_ranks_the_outlier_layer_first(layer):
    model = tiny_student()
    w = model.window_samples
    convs = [m for name, m in model.named_modules() if name in ("frontend.2", "context.0", "head.0", "out")]
    names = ["frontend.2", "context.0", "head.0", "out"]
    prev, conv = convs[names.index(layer) - 1], convs[names.index(layer)]
    with torch.no_grad():
        prev.weight[0].zero_()  # input channel 0 of `layer` is now always 0 (ReLU of -1) ...
        prev.bias[0] = -1.0
        conv.weight[:, 0, 0] = 50.0  # ... so a huge weight there leaves the float model unchanged, but
    rows = sensitivity(
        model, speechlike(32, w, 0), speechlike(16, w, 1)
    )  # per-channel int8 now zeroes the rest
    assert rows[0]["layer"] == layer
    assert {r["layer"] for r in rows} == {
        "frontend.0",
        "frontend.1",
        "frontend.2",
        "context.0",
        "head.0",
        "out",
    }
    assert rows[0]["mse"] > 10 * rows[1]["mse"]


def test_input_sensitivity_is_zero_on_the_int8_grid_and_not_off_it():
    model = tiny_student()
    w = model.window_samples
    calib = speechlike(32, w, 0)
    lo, hi = float(calib.min()), float(calib.max())
    scale = (max(hi, 0.0) - min(lo, 0.0)) / 255.0
    zero = round(-128 - min(lo, 0.0) / scale)
    noisy = speechlike(16, w, 1)
    on_grid = (
        np.clip(np.round(noisy / scale) + zero, -128, 127) - zero
    ) * scale  # already int8-representable
    row = input_sensitivity(model, calib, on_grid.astype(np.float32))
    assert row["layer"] == "(input)" and row["max_abs_diff"] < 1e-6
    off = input_sensitivity(model, calib, noisy)
    assert off["max_abs_diff"] > 1e-4 and off["mse"] > 0
    with pytest.raises(QuantizeError):
        input_sensitivity(model, calib[:0], noisy)


def test_sensitivity_of_a_logmel_student_skips_what_stays_float():
    """The log-mel filterbank is never quantized (quantize.always_float) and it reads the audio, so neither it nor
    the input appears as an int8 error (stop 20 reported 0.79 and 0.21 for them on a binary that passed at 0.014)."""
    model = tiny_student(frontend=(16,), logmel=True)
    w = model.window_samples
    calib, held = speechlike(32, w, 0), speechlike(16, w, 1)
    rows = sensitivity(model, calib, held)
    assert {r["layer"] for r in rows} == {"frontend.0", "context.0", "head.0", "out"}
    assert input_sensitivity(model, calib, held) == {
        "layer": "(input)",
        "params": 0,
        "mse": 0.0,
        "max_abs_diff": 0.0,
        "float_input": True,
    }


def test_pt2e_keep_float_leaves_layer_unquantized():
    model = tiny_student()
    w = model.window_samples
    quantized, _ = quantize_pt2e(model, speechlike(8, w, 0), keep_float=("out",))
    targets = [str(n.target) for n in quantized.graph.nodes]
    per_channel = [t for t in targets if t.startswith("quantized_decomposed.dequantize_per_channel")]
    assert len(per_channel) == 5  # every conv weight but the kept-float output layer
    with pytest.raises(QuantizeError, match="not weight layers"):
        quantize_pt2e(model, speechlike(8, w, 0), keep_float=("nope",))


def test_qat_returns_same_architecture_with_adapted_weights():
    model = tiny_student()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tuned = qat_finetune(
        model, speechlike(32, model.window_samples, 0), config=QuantizeConfig(qat_steps=3, qat_batch=8)
    )
    assert tuned.config == model.config
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # input untouched
    assert any(not torch.equal(before[k], v) for k, v in tuned.state_dict().items())


def test_config_round_trips_and_validates():
    config = QuantizeConfig(keep_float=("out",), qat_steps=10)
    assert QuantizeConfig.from_dict(config.to_dict()) == config
    with pytest.raises(QuantizeError):
        QuantizeConfig(qat_steps=-1)


@pytest.mark.parametrize("method", ["nearest", "gptq"])
def test_rounded_weights_lie_on_the_int8_grid_with_the_original_scales(method):
    model = tiny_student()
    rounded = round_weights(model, speechlike(32, model.window_samples, 0), method=method)
    for (name, before), after in zip(weight_layers(model).items(), weight_layers(rounded).values()):
        w0 = before.weight.detach().flatten(1).double()
        w1 = after.weight.detach().flatten(1).double()
        scale = w0.abs().amax(dim=1, keepdim=True) / 127.0
        steps = w1 / scale
        assert torch.allclose(steps, steps.round(), atol=1e-3), name  # on the grid ...
        assert torch.allclose(w1.abs().amax(dim=1), w0.abs().amax(dim=1), rtol=1e-6), (
            name
        )  # ... of the same scale
        assert torch.equal(after.bias, before.bias)


def test_gptq_rounding_beats_nearest_on_held_out_windows():
    model = tiny_student()
    w = model.window_samples
    calib, held = speechlike(64, w, 0), torch.as_tensor(speechlike(64, w, 1))
    errors = {}
    with torch.no_grad():
        reference = model(held)
        for method in ("nearest", "gptq"):
            out = round_weights(model, calib, method=method)(held)
            errors[method] = float((out - reference).pow(2).mean())
    assert errors["gptq"] < 0.8 * errors["nearest"], errors


def test_unknown_rounding_is_refused():
    with pytest.raises(QuantizeError, match="unknown weight rounding"):
        round_weights(tiny_student(), np.zeros((1, 1), np.float32), method="stochastic")


def test_run_pipeline_qat_variant_is_made_once_per_parent_and_exports_int8(tmp_path):
    import json

    from compress.card import card_path
    from compress.pipeline import RunConfig, _qat, _ship_one
    from students.model import load_student, save_student

    model = tiny_student(input_encoding="mulaw")
    ckpt = tmp_path / "student.pt"
    save_student(ckpt, model)
    split = toy_split(model)
    config = RunConfig.quick_config()
    path = _qat(ckpt, 5, split, config)
    assert path.name == "student-qat.pt" and load_student(path).config.input_encoding == "mulaw"
    stamp = path.stat().st_mtime_ns
    assert _qat(ckpt, 5, split, config) == path and path.stat().st_mtime_ns == stamp  # reused, not retrained
    assert _qat(ckpt, 3, split, config).stat().st_mtime_ns != stamp  # other QAT steps: made again
    stamp = path.stat().st_mtime_ns
    save_student(ckpt, tiny_student(seed=1, input_encoding="mulaw"))  # a new parent: made again
    assert _qat(ckpt, 5, split, config).stat().st_mtime_ns != stamp
    refusals = _ship_one(
        load_student(path), path, "toy-qat", tmp_path / "bin", split, split, config,
        extra={"qat": True}, dtypes=("int8",),
    )  # fmt: skip
    written = sorted(p.name for p in (tmp_path / "bin").glob("*.tflite")) + sorted(
        p.name for p in (tmp_path / "bin").glob("*.onnx")
    )
    assert sorted(written + [r["binary"] for r in refusals]) == ["toy-qat.int8.onnx", "toy-qat.int8.tflite"]
    for name in written:
        card = json.loads(card_path(tmp_path / "bin" / name).read_text())
        assert (
            card["dtype"] == "int8" and card["input"]["encoding"]["type"] == "mulaw" and card["qat"] is True
        )
