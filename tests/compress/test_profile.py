"""Profiler: tensor lifetimes, MACs, verified lookahead, latency and the `compress profile` CI gate."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from compress.cli import main
from compress.profile import (
    ProfileConfig,
    _onnx_graph,
    graph_macs,
    graph_peak_activation_bytes,
    peak_live_bytes,
    profile_binary,
)

FAST = ProfileConfig(runs=20, warmup=2, measure_rss=False)


def _branch_model(path):
    """X[1,1,100] -> Conv(4,k3) A -> Relu B -> {Conv(2,k1) C, Conv(2,k1) D} -> Add Y[1,2,98]."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
        for n, s in (("W1", (4, 1, 3)), ("W2", (2, 4, 1)), ("W3", (2, 4, 1)))
    ]
    nodes = [
        helper.make_node("Conv", ["X", "W1"], ["A"]),
        helper.make_node("Relu", ["A"], ["B"]),
        helper.make_node("Conv", ["B", "W2"], ["C"]),
        helper.make_node("Conv", ["B", "W3"], ["D"]),
        helper.make_node("Add", ["C", "D"], ["Y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "branch",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 1, 100])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 2, 98])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def test_peak_live_bytes_chain_and_branch():
    # chain: x(10) -> a(100) -> b(20) -> y(5); peak is a+b at step 1
    ops = [(["x"], ["a"]), (["a"], ["b"]), (["b"], ["y"])]
    assert peak_live_bytes(ops, {"x": 10, "a": 100, "b": 20, "y": 5}, ["x"], ["y"]) == 120
    # branch: b feeds two ops, so it stays live while c is produced
    ops = [(["x"], ["b"]), (["b"], ["c"]), (["b"], ["d"]), (["c", "d"], ["y"])]
    assert peak_live_bytes(ops, {"x": 1, "b": 50, "c": 30, "d": 40, "y": 2}, ["x"], ["y"]) == 120


def test_onnx_graph_peak_and_macs_by_hand(tmp_path):
    path = tmp_path / "branch.onnx"
    _branch_model(path)
    graph = _onnx_graph(path, {})

    # bytes: X 400, A = B = 4*98*4 = 1568, C = D = Y = 784. Peaks: Relu step A+B = 3136; 2nd conv B+C+D = 3136.
    assert graph_peak_activation_bytes(graph) == 3136
    assert graph.weight_bytes == 4 * (12 + 8 + 8)
    # MACs: 98*4*(1*3) + 2 * 98*2*(4*1)
    assert graph_macs(graph) == 1176 + 2 * 784
    result = profile_binary(path, card={"output": {"fps": 30, "channel_names": ["c0", "c1"]}}, config=FAST)
    assert result["frames_per_call"] == 98  # 196 output values / 2 channels
    assert result["macs_per_frame"] == 28  # 2744 / 98
    assert result["lookahead_ms"] is None and not result["lookahead_verified"]


class _Lookahead(torch.nn.Module):
    """Reads exactly ``past + k`` samples of its window: the lookahead after the anchor is k samples."""

    def __init__(self, past: int, k: int) -> None:
        super().__init__()
        self.n = past + k
        self.c1 = torch.nn.Conv1d(1, 4, 8, stride=8)
        self.c2 = torch.nn.Conv1d(4, 3, 3)

    def forward(self, x):
        h = torch.tanh(self.c1(x[:, None, : self.n]))
        return self.c2(h).mean(-1)


PAST, FUTURE, K = 64, 48, 24  # window 112 samples, anchor at 64, reads 24 samples (1.5 ms) after it


@pytest.fixture(scope="module")
def lookahead_binaries(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("bin")
    model = _Lookahead(PAST, K).eval()
    example = torch.randn(1, PAST + FUTURE)
    torch.onnx.export(model, (example,), d / "la.onnx", external_data=False, dynamo=True, verbose=False)
    import litert_torch

    litert_torch.convert(model, (example,)).export(str(d / "la.tflite"))
    card = {
        "input": {
            "sample_rate": 16000,
            "window_samples": PAST + FUTURE,
            "past_ms": PAST / 16,
            "future_ms": 3.0,
        },
        "output": {"fps": 30, "channel_names": ["a", "b", "c"]},
        "lookahead_ms": FUTURE / 16,
        "params": sum(p.numel() for p in model.parameters()),
        "dtype": "fp32",
    }
    for name in ("la.onnx", "la.tflite"):
        (d / f"{name}.card.json").write_text(json.dumps(card))
    return d


@pytest.mark.parametrize("name", ["la.onnx", "la.tflite"])
def test_verified_lookahead_macs_and_latency(lookahead_binaries, name):
    result = profile_binary(lookahead_binaries / name, config=FAST)
    assert result["lookahead_ms"] == pytest.approx(K / 16)
    assert result["lookahead_ms_card"] == pytest.approx(FUTURE / 16)
    assert result["lookahead_mismatch"] is True
    assert result["receptive_past_ms"] == pytest.approx(PAST / 16)
    # c1: 11 outputs * 4 ch * 8 taps; c2: 9 outputs * 3 ch * 4 ch * 3 taps
    assert result["macs_per_frame"] == 11 * 4 * 8 + 9 * 3 * 4 * 3
    assert result["weight_bytes"] >= 4 * (4 * 8 + 4 + 3 * 4 * 3 + 3)
    assert result["peak_activation_bytes"] > 0
    assert 0 < result["latency_ms"]["median"] <= result["latency_ms"]["p99"]
    assert result["real_time_factor"] == pytest.approx((1000 / 30) / result["latency_ms"]["median"])


def test_runtime_rss_is_measured_in_a_subprocess(lookahead_binaries):
    result = profile_binary(lookahead_binaries / "la.onnx", config=ProfileConfig(runs=5, warmup=1))
    assert result["runtime_rss_bytes"] > 0


def test_cli_gate_fails_over_budget_with_a_readable_table(lookahead_binaries, tmp_path, capsys):
    budgets = tmp_path / "b.toml"
    budgets.write_text("[tiny]\nmax_bytes = 100\nmax_lookahead_ms = 10\n")
    out = tmp_path / "p.json"
    argv = ["profile", str(lookahead_binaries / "la.onnx"), "--budgets", str(budgets), "--budget", "tiny"]
    code = main(argv + ["--runs", "5", "--warmup", "1", "--json", str(out)])
    text = capsys.readouterr().out
    assert code == 1
    assert "FAIL" in text and "PASS" in text  # bytes over, lookahead 1.5 ms within 10 ms
    assert "la.onnx" in text and "<= 100" in text
    data = json.loads(out.read_text())
    assert data["binaries"][0]["budgets"]["tiny"]["pass"] is False

    budgets.write_text("[tiny]\nmax_bytes = 10_000_000\n")
    assert main(argv + ["--runs", "5", "--warmup", "1"]) == 0


def test_cli_malformed_budget_file_is_one_clear_line(lookahead_binaries, tmp_path, capsys):
    budgets = tmp_path / "bad.toml"
    budgets.write_text("[tiny]\nmax_byts = 100\n")
    code = main(
        ["profile", str(lookahead_binaries / "la.onnx"), "--budgets", str(budgets), "--budget", "tiny"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert str(budgets) in err and "max_byts" in err and "unknown key" in err
    assert len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------------------------
# Streaming pairs


@pytest.fixture(scope="module")
def stream_pair(tmp_path_factory):
    from compress.export import ExportConfig
    from compress.stream_export import export_streaming
    from students.model import Student, preset

    torch.manual_seed(0)
    model = Student(
        preset("tiny", frontend_channels=(4, 8, 8), context_channels=(8, 8), head_hidden=(4,))
    ).eval()
    d = tmp_path_factory.mktemp("stream")
    audio = [(0.3 * np.random.default_rng(s).standard_normal(16000)).astype(np.float32) for s in (1, 2)]
    config = ExportConfig(formats=("onnx",), dtypes=("fp32",), fp32_tolerance=1e-5)
    (card,) = export_streaming(model, audio[:1], audio[1], d, name="t", config=config)
    return model, card


def test_streaming_pair_profiled_as_one_model(stream_pair):
    from students.streaming import streaming_macs_per_frame

    model, card_file = stream_pair
    card = json.loads(card_file.read_text())
    step = card_file.parent / card["graphs"]["step"]["file"]
    head = card_file.parent / card["graphs"]["head"]["file"]
    result = profile_binary(step, config=FAST)
    assert result == {**profile_binary(head, config=FAST), "latency_ms": result["latency_ms"],
                      "real_time_factor": result["real_time_factor"]}  # fmt: skip
    assert result["streaming"] is True and result["binary"].endswith("t.stream.fp32.onnx")
    assert result["bytes"] == step.stat().st_size + head.stat().st_size
    # re-verified on the binaries: the frame changes with the last cell of its lookahead, not after it
    assert result["lookahead_ms"] == model.lookahead_ms and result["lookahead_mismatch"] is False
    assert (
        result["lookahead_check"]["after_claim_identical"] and result["lookahead_check"]["last_cell_changes"]
    )
    # counted from the graphs, it equals the PyTorch hook count (fractional per frame: rounded up)
    assert result["macs_per_frame"] == math.ceil(streaming_macs_per_frame(model))
    assert result["macs_per_frame"] < card["macs_per_frame"]["windowed"]
    states = sum(4 * np.prod(s["shape"]) for s in card["state"])
    assert result["state_bytes"] == states
    assert result["peak_activation_bytes"] == states + max(result["graph_peak_activation_bytes"].values())
    assert result["latency_frames"] == FAST.runs
    assert 0 < result["latency_ms"]["median"] <= result["latency_ms"]["p99"]

    # a card claiming another lookahead is caught
    card["lookahead_ms"] += 4
    card_file.write_text(json.dumps(card))
    try:
        assert profile_binary(card_file, config=FAST)["lookahead_mismatch"] is True
    finally:
        card["lookahead_ms"] -= 4
        card_file.write_text(json.dumps(card))


def test_cli_profiles_each_pair_once_and_gates_it(stream_pair, lookahead_binaries, tmp_path, capsys):
    _, card_file = stream_pair
    files = sorted(str(p) for p in card_file.parent.iterdir() if p.suffix in (".onnx", ".tflite"))
    assert len(files) == 2  # step + head, as `compress run` lists a binaries folder
    budgets = tmp_path / "b.toml"
    budgets.write_text("[dev]\nmax_macs_per_frame = 1000\nmax_peak_activation_bytes = 1_000_000\n")
    out = tmp_path / "p.json"
    argv = ["profile", *files, str(card_file), str(lookahead_binaries / "la.onnx"), "--budgets", str(budgets)]
    argv += ["--budget", "dev", "--runs", "5", "--warmup", "1", "--json", str(out)]
    assert main(argv) == 1  # the pair needs ~16k MACs per frame
    text = capsys.readouterr().out
    assert "t.stream.fp32.onnx" in text and "state bytes" in text
    data = json.loads(out.read_text())["binaries"]
    assert [r["streaming"] for r in data] == [True, False]
    assert data[0]["budgets"]["dev"]["pass"] is False and data[1]["budgets"]["dev"]["pass"] is True
    budgets.write_text("[dev]\nmax_macs_per_frame = 100_000\nmax_lookahead_ms = 300\n")
    assert main(argv) == 0
