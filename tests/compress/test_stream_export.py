"""Streaming export: every binary pair streams a held-out clip like the windowed model; the card alone drives it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from compress.export import ExportConfig, ExportError, tflite_float_weight_ops
from compress.stream_export import binary_step_functions, export_streaming
from students.model import Student, preset
from students.streaming import Streamer, StreamingStep, run_stream
from teacher.constants import frame_anchors, num_frames

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]


def _model(**overrides) -> Student:
    torch.manual_seed(0)
    small = dict(frontend_channels=(8, 8, 16), context_channels=(16, 16), head_hidden=(8,), head_bottleneck=8)
    cfg = preset("realtime", **{**small, **overrides})
    model = Student(cfg).eval()
    with torch.no_grad():
        for p in (p for p in model.parameters() if p.requires_grad):  # a fixed log-mel filterbank stays
            p.normal_(0.0, 0.5 / max(1, p[0].numel()) ** 0.5 if p.dim() > 1 else 0.1)
    return model


def _audio(seed: int, seconds: float) -> np.ndarray:
    return (0.3 * np.random.default_rng(seed).standard_normal(int(16000 * seconds))).astype(np.float32)


def _streamed(model: Student, audio: np.ndarray) -> np.ndarray:
    streamer = Streamer(model)
    return np.concatenate([streamer.push(audio), streamer.flush()])


@pytest.fixture(scope="module")
def tflite_pair(tmp_path_factory) -> tuple[Student, Path]:
    model, out = _model(), tmp_path_factory.mktemp("stream")
    export_streaming(
        model, [_audio(1, 1.5)], _audio(2, 3.0), out, name="rt", config=ExportConfig(formats=("tflite",))
    )
    return model, out


@pytest.mark.slow
def test_tflite_pairs_are_checked_and_carded(tflite_pair) -> None:
    model, out = tflite_pair
    parity = {}
    for dtype, tolerance in (("fp32", 1e-5), ("int8", 0.02), ("a16w8", 0.02)):
        card = json.loads((out / f"rt.stream.{dtype}.tflite.card.json").read_text())
        assert card["parity"]["max_abs_diff"] <= tolerance and card["parity"]["windows"] == 90
        assert card["lookahead_ms"] == model.lookahead_ms and card["block_samples"] == 512
        assert [s["name"] for s in card["state"]] == ["context0_state", "context1_state", "head_buffer"]
        for graph in ("step", "head"):
            assert (out / card["graphs"][graph]["file"]).is_file()
            if dtype != "fp32":
                assert tflite_float_weight_ops(out / card["graphs"][graph]["file"]) == []
        assert card["macs_per_frame"]["streaming"] < card["macs_per_frame"]["windowed"]
        parity[dtype] = card["parity"]["mean_abs_diff"]
    assert parity["a16w8"] < 0.5 * parity["int8"]  # int16 activations and states: much closer to float
    a16 = json.loads((out / "rt.stream.a16w8.tflite.card.json").read_text())
    assert {s["dtype"] for s in a16["graphs"]["step"]["inputs"]} == {"int16"}


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["fp32", "int8", "a16w8"])
def test_readme_example_streams_a_wav_from_the_card_alone(tflite_pair, tmp_path, dtype: str) -> None:
    model, out = tflite_pair
    spec = importlib.util.spec_from_file_location("stream_example", ROOT / "docs" / "stream_example.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    audio = _audio(3, 2.3)
    wav = tmp_path / "clip.wav"
    sf.write(wav, audio, 16000, subtype="FLOAT")
    frames = example.stream(str(out / f"rt.stream.{dtype}.tflite.card.json"), str(wav))
    expected = _streamed(model, audio)
    assert frames.shape == expected.shape
    assert np.abs(frames - expected).max() <= (1e-5 if dtype == "fp32" else 0.02)


@pytest.mark.slow
def test_onnx_pairs_and_a_refused_pair_leaves_nothing(tmp_path) -> None:
    model = _model()
    cards = export_streaming(
        model, [_audio(1, 1.0)], _audio(2, 2.0), tmp_path, name="rt", config=ExportConfig(formats=("onnx",))
    )
    assert [c.name for c in cards] == [
        "rt.stream.fp32.onnx.card.json",
        "rt.stream.int8.onnx.card.json",
        "rt.stream.a16w8.onnx.card.json",
    ]
    int8 = json.loads(cards[1].read_text())
    assert int8["parity"]["max_abs_diff"] <= 0.02 and int8["graphs"]["step"]["inputs"][0]["name"] == "cells"
    strict = tmp_path / "strict"
    with pytest.raises(ExportError, match="refused"):
        export_streaming(
            model, [_audio(1, 1.0)], _audio(2, 2.0), strict, name="rt",
            config=ExportConfig(formats=("onnx",), dtypes=("fp32",), fp32_tolerance=1e-12),
        )  # fmt: skip
    assert not strict.exists() or not any(strict.iterdir())


def test_onnx_fp32_pair_of_8_cell_blocks_matches_the_windowed_model(tmp_path) -> None:
    model, audio = _model(), _audio(4, 7.3)
    config = ExportConfig(formats=("onnx",), dtypes=("fp32",))
    (card_file,) = export_streaming(
        model, [_audio(1, 0.5)], audio[:16000], tmp_path, name="rt", config=config
    )
    card = json.loads(card_file.read_text())
    assert (
        card["block_samples"] == 512 and card["block_cells"] == 8 and card["parity"]["max_abs_diff"] <= 1e-5
    )
    step = card["graphs"]["step"]
    assert (
        step["inputs"][0]["shape"] == [1, 512] and step["outputs"][-1]["tensor"] == card["history"]["output"]
    )
    assert (
        card["history"]["shape"]
        == step["outputs"][-1]["shape"]
        == [1, 8, card["state"][-1]["shape"][-1] + 8]  # the 8-channel bottleneck feeds the head
    )
    # a long utterance, streamed through the binaries in 8-cell blocks, equals the windowed model
    graphs = {g: {k: card["graphs"][g][k] for k in ("inputs", "outputs")} for g in ("step", "head")}
    step_fn, head_fn = binary_step_functions(
        tmp_path / step["file"], tmp_path / card["graphs"]["head"]["file"], graphs
    )
    initial = [s.numpy() for s in StreamingStep(model).initial_state()]
    streamed = run_stream(audio, step_fn, head_fn, initial_state=initial, block_samples=512, model=model)
    anchors = torch.from_numpy(frame_anchors(num_frames(len(audio), 30), 30))
    with torch.no_grad():
        windowed = model.forward_full(torch.from_numpy(audio)[None], anchors, pad=True)[0].numpy()
    assert streamed.shape == windowed.shape == (219, 52)
    assert np.abs(streamed - windowed).max() <= 1e-5


def test_mulaw_student_streams_from_its_card_with_host_side_companding(tmp_path) -> None:
    model = _model(input_encoding="mulaw")
    (card,) = export_streaming(
        model,
        [_audio(1, 1.0)],
        _audio(2, 1.5),
        tmp_path,
        name="mu",
        config=ExportConfig(formats=("tflite",), dtypes=("fp32",)),
    )
    data = json.loads(card.read_text())
    assert data["input_encoding"]["type"] == "mulaw" and "mu-law" in data["input_meaning"]
    assert data["parity"]["max_abs_diff"] <= 1e-5  # exported step graph fed companded cells = windowed model
    spec = importlib.util.spec_from_file_location("stream_example", ROOT / "docs" / "stream_example.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    audio = 0.05 * _audio(3, 1.2)
    wav = tmp_path / "clip.wav"
    sf.write(wav, audio, 16000, subtype="FLOAT")
    expected = _streamed(model, audio)
    assert np.abs(example.stream(str(card), str(wav)) - expected).max() <= 1e-5


def test_logmel_student_streams_from_its_card(tmp_path) -> None:
    """A log-mel student's step graph carries the last 192 samples as an ``audio_tail`` state; the card names it and
    the README's streaming example drives it with no facedistill import."""
    model = _model(frontend="logmel", strides=(1,), frontend_channels=(16,))
    card, int8 = export_streaming(
        model,
        [_audio(1, 1.0)],
        _audio(2, 1.5),
        tmp_path,
        name="mel",
        config=ExportConfig(formats=("tflite",), dtypes=("fp32", "int8"), fp32_tolerance=1e-5),
    )
    data = json.loads(card.read_text())
    assert data["parity"]["max_abs_diff"] <= 1e-5
    # int8: the step graph computes the filterbank in float from int8-stored weights; no float weight is left
    q = json.loads(int8.read_text())
    assert q["parity"]["max_abs_diff"] <= 0.02 and q["quantization"]["weight_only_int8"] == ["logmel"]
    assert tflite_float_weight_ops(tmp_path / q["graphs"]["step"]["file"]) == []
    assert "audio_tail" in json.dumps(data)
    spec = importlib.util.spec_from_file_location("stream_example", ROOT / "docs" / "stream_example.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    audio = 0.05 * _audio(3, 1.2)
    wav = tmp_path / "clip.wav"
    sf.write(wav, audio, 16000, subtype="FLOAT")
    assert np.abs(example.stream(str(card), str(wav)) - _streamed(model, audio)).max() <= 1e-5
