"""Export: every binary runs in its runtime and matches PyTorch; broken or secretly-float binaries are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from toy_models import speechlike, tiny_student

import compress.export as ex
from compress.card import card_path


def test_all_binaries_match_pytorch_and_int8_is_int8(tmp_path):
    model = tiny_student()
    w = model.window_samples
    paths = ex.export(
        model, speechlike(32, w, 0), speechlike(16, w, 1), tmp_path, name="t", parent_sha256="abc"
    )
    assert sorted(p.name for p in paths) == [
        "t.a16w8.onnx",
        "t.a16w8.tflite",
        "t.fp32.onnx",
        "t.fp32.tflite",
        "t.int8.onnx",
        "t.int8.tflite",
    ]
    cards = {}
    for path in paths:
        card = json.loads(card_path(path).read_text())
        assert card["parity"]["max_abs_diff"] <= card["parity"]["tolerance"]
        assert card["input"]["window_samples"] == w and card["output"]["channel_names"][1] == "mouthClose"
        assert card["file_bytes"] == path.stat().st_size and card["parent_sha256"] == "abc"
        cards[path.name] = card
    for dtype in ("int8", "a16w8"):
        assert ex.onnx_float_weight_layers(tmp_path / f"t.{dtype}.onnx") == []
        assert ex.tflite_float_weight_ops(tmp_path / f"t.{dtype}.tflite") == []
    # int16 activations: much closer to the float model than int8, from the same int8 weights
    for fmt in ("onnx", "tflite"):
        a16, i8 = cards[f"t.a16w8.{fmt}"]["parity"], cards[f"t.int8.{fmt}"]["parity"]
        assert a16["mean_abs_diff"] < 0.5 * i8["mean_abs_diff"], fmt
    assert cards["t.a16w8.tflite"]["input"]["dtype"] == "int16"
    assert "int16 activations" in cards["t.a16w8.tflite"]["quantization"]["scheme"]
    assert len(ex.onnx_float_weight_layers(tmp_path / "t.fp32.onnx")) == 6  # the check sees float weights
    assert (tmp_path / "t.int8.onnx").stat().st_size < 0.7 * (tmp_path / "t.fp32.onnx").stat().st_size
    # ONNX cards name the session settings the parity was measured with; TFLite cards need none
    assert cards["t.int8.onnx"]["runtime"]["onnxruntime_session_config"] == {"session.x64quantprecision": "1"}
    assert cards["t.int8.tflite"]["runtime"] == {}
    session = ex.ort_session(tmp_path / "t.int8.onnx")
    assert session.get_session_options().get_session_config_entry("session.x64quantprecision") == "1"


def test_audio_range_follows_reshapes_of_the_input():
    """The [-1, 1] audio contract holds for every tensor that only reshapes the input (the exporter may put an
    Unsqueeze before the first conv, where the quantizer then meets the audio), and for no computed tensor."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Unsqueeze", ["audio", "axes"], ["u"]),
        helper.make_node("Reshape", ["u", "shape"], ["r"]),
        helper.make_node("Conv", ["r", "w"], ["c"]),
        helper.make_node("Unsqueeze", ["c", "axes"], ["cu"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("cu", TensorProto.FLOAT, None)],
    )
    assert ex.audio_tensors(helper.make_model(graph), ["audio"]) == {"audio", "u", "r"}
    low, high = ex.quant_range(np.float32(-0.3), np.float32(0.2), dtype="int8", audio=True)
    assert (low, high) == (-1.0, 1.0)


def test_binary_that_drifts_is_refused_and_not_written(tmp_path, monkeypatch):
    model = tiny_student()
    broken = tiny_student()
    with torch.no_grad():
        broken.head[0].weight.mul_(3.0)  # a "wrong model" reaches the exporter
    real = ex._export_onnx_fp32
    monkeypatch.setattr(ex, "_export_onnx_fp32", lambda _m, example, path: real(broken, example, path))
    w = model.window_samples
    config = ex.ExportConfig(formats=("onnx",), dtypes=("fp32",))
    with pytest.raises(ex.ExportError, match="refused"):
        ex.export(model, speechlike(8, w, 0), speechlike(8, w, 1), tmp_path, name="t", config=config)
    assert list(tmp_path.iterdir()) == []


def test_refusal_is_recorded_and_a_rerun_with_the_same_inputs_does_not_rebuild(tmp_path, monkeypatch):
    model = tiny_student()
    broken = tiny_student()
    with torch.no_grad():
        broken.head[0].weight.mul_(3.0)
    real = ex._export_onnx_fp32
    monkeypatch.setattr(ex, "_export_onnx_fp32", lambda _m, example, path: real(broken, example, path))
    w = model.window_samples
    config = ex.ExportConfig(formats=("onnx",), dtypes=("fp32",))
    args = (model, speechlike(8, w, 0), speechlike(8, w, 1), tmp_path)
    with pytest.raises(ex.ExportError, match="refused") as first:
        ex.export(*args, name="t", config=config, parent_sha256="p")
    record = ex.refusal_path(tmp_path / "t.fp32.onnx")
    assert sorted(f.name for f in tmp_path.iterdir()) == [record.name]  # no binary, no card: only the verdict

    def no_build(*_a, **_k):
        raise AssertionError("rebuilt a binary whose refusal is on record")

    monkeypatch.setattr(ex, "_write_binary", no_build)
    with pytest.raises(ex.ExportError, match="recorded in") as again:
        ex.export(*args, name="t", config=config, parent_sha256="p")
    assert again.value.max_abs_diff == pytest.approx(first.value.max_abs_diff)
    for changed in (  # another parent, other windows, another config, or force: built again
        dict(parent_sha256="q"),
        dict(parent_sha256="p", force=True),
    ):
        with pytest.raises(AssertionError, match="rebuilt"):
            ex.export(*args, name="t", config=config, **changed)
    with pytest.raises(AssertionError, match="rebuilt"):
        ex.export(
            model,
            speechlike(8, w, 2),
            speechlike(8, w, 1),
            tmp_path,
            name="t",
            config=config,
            parent_sha256="p",
        )
    with pytest.raises(AssertionError, match="rebuilt"):
        ex.export(
            *args,
            name="t",
            config=ex.ExportConfig(formats=("onnx",), dtypes=("fp32",), fp32_tolerance=1.0),
            parent_sha256="p",
        )
    monkeypatch.undo()  # the exporter is mended: the binary is written and its refusal record goes
    (path,) = ex.export(*args, name="t", config=config, parent_sha256="p2")
    assert path.is_file() and not record.exists()


def test_int8_binary_with_float_weights_is_refused(tmp_path, monkeypatch):
    model = tiny_student()
    monkeypatch.setattr(ex, "quantize_onnx_qdq", lambda *a, **k: None)  # "int8" export silently stays float
    w = model.window_samples
    config = ex.ExportConfig(formats=("onnx",), dtypes=("int8",))
    with pytest.raises(ex.ExportError, match="float weights"):
        ex.export(model, speechlike(8, w, 0), speechlike(8, w, 1), tmp_path, name="t", config=config)
    assert list(tmp_path.iterdir()) == []


def test_keep_float_layer_is_allowed_and_listed(tmp_path):
    model = tiny_student()
    w = model.window_samples
    config = ex.ExportConfig(formats=("onnx",), dtypes=("int8",), keep_float=("out",))
    (path,) = ex.export(model, speechlike(16, w, 0), speechlike(8, w, 1), tmp_path, name="t", config=config)
    assert ex.onnx_float_weight_layers(path) == ["out"]
    assert json.loads(card_path(path).read_text())["quantization"]["keep_float"] == ["out"]
    with pytest.raises(ex.ExportError, match="not weight layers"):
        bad = ex.ExportConfig(formats=("onnx",), dtypes=("int8",), keep_float=("nope",))
        ex.export(model, speechlike(16, w, 0), speechlike(8, w, 1), tmp_path / "x", name="t", config=bad)


def test_rerun_skips_up_to_date_binary(tmp_path):
    model = tiny_student()
    w = model.window_samples
    config = ex.ExportConfig(formats=("onnx",), dtypes=("fp32",))
    args = (model, speechlike(8, w, 0), speechlike(8, w, 1), tmp_path)
    (path,) = ex.export(*args, name="t", config=config, parent_sha256="p")
    stamp = path.stat().st_mtime_ns
    ex.export(*args, name="t", config=config, parent_sha256="p")
    assert path.stat().st_mtime_ns == stamp
    # other calibration or held-out windows (e.g. compress run's calibration audio changed): rebuilt
    other = (model, speechlike(8, w, 2), speechlike(8, w, 1), tmp_path)
    ex.export(*other, name="t", config=config, parent_sha256="p")
    assert path.stat().st_mtime_ns != stamp
    card = json.loads(card_path(path).read_text())
    assert card["parity"]["windows_sha256"] == ex._windows_digest(speechlike(8, w, 2), speechlike(8, w, 1))


def test_cli_export_and_quantize_from_a_dataset(tmp_path, capsys):
    from compress.cli import main
    from students.model import save_student
    from teacher.constants import num_frames
    from teacher.dataset import Utterance, write_manifest, write_shard

    model = tiny_student()
    names = list(model.config.channel_names)
    utts = []
    for i in range(8):
        audio = speechlike(1, 16000, i)[0]
        audio *= 0.5 / np.abs(audio).max()  # equal loudness: held-out audio inside the calibrated input range
        labels = np.random.default_rng(i).uniform(size=(num_frames(16000, 30), len(names))).astype(np.float32)
        utts.append(Utterance(id=f"u{i}", audio=audio, labels=labels))
    data = tmp_path / "data"
    entry = write_shard(data / "shards" / "shard-00000.npz", utts, fps=30, n_channels=len(names))
    write_manifest(data, [entry], name="d", split="labeled", fps=30, channel_names=names, has_labels=True,
                   has_truth=False, label_source="test")  # fmt: skip
    ckpt = tmp_path / "t.pt"
    save_student(ckpt, model)
    out = tmp_path / "bin"
    common = [
        str(ckpt),
        "--calib",
        str(data),
        "--out",
        str(out),
        "--formats",
        "onnx",
        "--calib-windows",
        "32",
    ]
    assert main(["export", *common, "--dtypes", "fp32"]) == 0
    assert main(["quantize", *common, "--report-sensitivity", "--int8-tolerance", "0.05"]) == 0  # random init
    assert {p.name for p in out.iterdir()} == {
        "t.fp32.onnx", "t.fp32.onnx.card.json", "t.int8.onnx", "t.int8.onnx.card.json", "t.sensitivity.json",
    }  # fmt: skip
    card = json.loads((out / "t.int8.onnx.card.json").read_text())
    assert card["dtype"] == "int8" and card["parity"]["windows"] > 0
    assert main(["export", str(ckpt), "--calib", str(tmp_path / "nowhere")]) == 2
    assert "no dataset manifest" in capsys.readouterr().err
    # prune with a fine-tune driven by another dataset's audio, then a16w8 binaries of the pruned student
    pruned = tmp_path / "t-pruned.pt"
    args = [
        "--calib",
        str(data),
        "--finetune-data",
        str(data),
        "--finetune-windows",
        "16",
        "--finetune-steps",
        "2",
    ]
    assert main(["prune", str(ckpt), *args, "--round-to", "4", "--out", str(pruned)]) == 0
    # without --finetune-data the fine-tune cuts --finetune-windows windows from --calib's audio, as compress run
    # does (it used to take the 512 calibration windows and ignore --finetune-windows)
    from argparse import Namespace

    from compress.cmd_compress import _finetune_windows

    for count in (40, 100):
        ns = Namespace(calib=data, finetune_data=None, finetune_windows=count, label_weight=0.0, seed=0)
        assert _finetune_windows(ns, model)[0].shape == (count, model.window_samples)
    card = json.loads(pruned.with_name(pruned.name + ".card.json").read_text())
    assert card["params_after"] < card["params_before"] and card["prune_config"]["finetune_steps"] == 2
    assert main(["quantize", str(pruned), *common[1:], "--dtypes", "a16w8"]) == 0
    a16 = json.loads((out / "t-pruned.a16w8.onnx.card.json").read_text())
    assert a16["dtype"] == "a16w8" and a16["parity"]["max_abs_diff"] <= 0.02


@pytest.mark.parametrize("rounding", ["nearest", "gptq"])
def test_quantized_onnx_carries_the_chosen_weight_rounding(tmp_path, rounding):
    """The exporter re-derives the per-channel scales and keeps the rounded integers exactly."""
    import onnx
    from onnx import numpy_helper

    model = tiny_student()
    w = model.window_samples
    calib = speechlike(32, w, 0)
    config = ex.ExportConfig(formats=("onnx",), dtypes=("a16w8",), weight_rounding=rounding)
    (path,) = ex.export(model, calib, speechlike(16, w, 1), tmp_path, name="t", config=config)
    weights = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    expected = dict(ex.grid_weights(model, calib, config).named_parameters())
    nearest = dict(
        ex.grid_weights(model, calib, ex.ExportConfig(weight_rounding="nearest")).named_parameters()
    )
    differs = 0
    for name in ("frontend.0", "frontend.1", "context.0", "head.0", "out"):
        q, scale = weights[f"{name}.weight_quantized"], weights[f"{name}.weight_scale"]
        stored = q.astype(np.float64) * scale.astype(np.float64).reshape(-1, 1, 1)
        np.testing.assert_allclose(stored, expected[f"{name}.weight"].detach().double().numpy(), atol=1e-7)
        steps = np.abs(stored - nearest[f"{name}.weight"].detach().double().numpy()) / scale.reshape(-1, 1, 1)
        differs += int(steps.max() > 0.5)  # some weight sits a whole grid step away from nearest rounding
    assert differs == (0 if rounding == "nearest" else 5)
    assert json.loads(card_path(path).read_text())["export_config"]["weight_rounding"] == rounding


def test_mulaw_student_binaries_take_companded_audio_and_say_so(tmp_path):
    from students.model import encode_input

    model = tiny_student(input_encoding="mulaw")
    w = model.window_samples
    calib, held = speechlike(32, w, 0), speechlike(16, w, 1)
    config = ex.ExportConfig(formats=("onnx", "tflite"), dtypes=("fp32", "int8"))
    paths = ex.export(model, calib, held, tmp_path, name="m", config=config)
    assert len(paths) == 4
    with torch.no_grad():
        reference = model(torch.from_numpy(held)).numpy()
    for path in paths:
        card = json.loads(card_path(path).read_text())
        assert card["input"]["encoding"]["type"] == "mulaw" and card["input"]["encoding"]["mu"] == 255.0
        assert "mu-law" in card["input"]["meaning"]
        assert card["parity"]["max_abs_diff"] <= card["parity"]["tolerance"]
    fp32 = tmp_path / "m.fp32.onnx"
    # the binary leaves the companding to the host: fed encoded audio it is the model, fed raw audio it is not
    assert np.abs(ex.run_binary(fp32, encode_input(held, model.config)) - reference).max() < 1e-4
    assert np.abs(ex.run_binary(fp32, held) - reference).max() > 0.01
    plain = json.loads(
        card_path(ex.export(tiny_student(), calib, held, tmp_path, name="l", config=config)[0]).read_text()
    )
    assert plain["input"]["encoding"] == {"type": "linear"}


def test_logmel_student_quantizes_around_its_float_filterbank(tmp_path):
    """A log-mel student's fixed filterbank (power spectrum, log) computes in float in every quantized binary,
    without being asked, from weights stored as int8 (weight-only: no float weight tensor left anywhere); the rest
    is int8 and the card says so. ``fixed_weights="fp32"`` stores the filterbank as it is (bigger binary)."""
    model = tiny_student(frontend=(16,), logmel=True)
    w = model.window_samples
    calib, held = speechlike(32, w, 0), speechlike(16, w, 1)
    config = ex.ExportConfig(formats=("onnx", "tflite"), dtypes=("fp32", "int8", "a16w8"))
    paths = ex.export(model, calib, held, tmp_path, name="mel", config=config)
    assert len(paths) == 6
    for path in paths:
        card = json.loads(card_path(path).read_text())
        assert card["parity"]["max_abs_diff"] <= card["parity"]["tolerance"], path.name
        assert card["frontend"]["type"] == "logmel" and card["frontend"]["bands"] == 16
        fixed = [] if ".fp32." in path.name else ["logmel"]
        assert card["quantization"]["keep_float"] == fixed
        assert card["quantization"]["weight_only_int8"] == fixed
        if ".int8." in path.name:  # the float filterbank reads the audio: int8 leaves the input float
            assert card["input"]["dtype"] == "float32" and card["input"]["quantization"] is None, path.name
    for dtype in ("int8", "a16w8"):
        assert ex.onnx_float_weight_layers(tmp_path / f"mel.{dtype}.onnx") == []
        assert ex.tflite_float_weight_ops(tmp_path / f"mel.{dtype}.tflite") == []
    assert ex.onnx_float_weight_layers(tmp_path / "mel.fp32.onnx") != []
    # the same binaries with the filterbank stored in fp32: its two layers are the only float weights, and they
    # weigh 4 bytes per weight instead of 1
    filterbank = model.logmel.dft.weight.numel() + model.logmel.mel.weight.numel()
    as_is = ex.ExportConfig(formats=("onnx", "tflite"), dtypes=("int8",), fixed_weights="fp32")
    for path in ex.export(model, calib, held, tmp_path / "fp32fb", name="mel", config=as_is):
        card = json.loads(card_path(path).read_text())
        assert card["parity"]["max_abs_diff"] <= 0.02 and card["quantization"]["weight_only_int8"] == []
        grown = path.stat().st_size - (tmp_path / path.name).stat().st_size
        assert 2.5 * filterbank < grown < 3.5 * filterbank, (path.name, grown, filterbank)
    assert ex.onnx_float_weight_layers(tmp_path / "fp32fb" / "mel.int8.onnx") == ["logmel.dft", "logmel.mel"]
    assert len(ex.tflite_float_weight_ops(tmp_path / "fp32fb" / "mel.int8.tflite")) == 2
    # TFLite a16w8 locates the filterbank by its top-level scope; other layers cannot be kept float there
    with pytest.raises(ex.ExportError, match="keep_float .* not supported for TFLite a16w8"):
        ex.export(
            model,
            calib,
            held,
            tmp_path,
            name="mel",
            config=ex.ExportConfig(("tflite",), ("a16w8",), ("head.0",)),
        )
    with pytest.raises(ex.ExportError, match="fixed_weights"):
        ex.ExportConfig(fixed_weights="int4")
