"""Student architecture: exact lookahead, fully-convolutional == windowed, checkpoints without pickled modules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from students.model import (
    PRESETS,
    Student,
    StudentConfigError,
    count_params,
    describe,
    encode_input,
    load_student,
    preset,
    save_student,
)
from teacher.constants import ANCHOR_QUANTUM, ms_to_samples

torch.set_num_threads(1)


def _model(name: str, **overrides) -> Student:
    torch.manual_seed(0)
    model = Student(preset(name, **overrides)).eval()
    # random weights large enough that every input sample reaches the output (default init is tiny after ReLUs);
    # fixed weights (the log-mel filterbank) stay as they are
    with torch.no_grad():
        for p in (p for p in model.parameters() if p.requires_grad):
            p.normal_(0.0, 0.5 / max(1, p[0].numel()) ** 0.5 if p.dim() > 1 else 0.1)
    return model


def _frame(model: Student, audio: torch.Tensor, anchor: int) -> torch.Tensor:
    with torch.no_grad():
        return model.forward_full(audio, torch.tensor([anchor]))[0, 0]


CASES = [*PRESETS, "tiny+smoothing"]


def _case(name: str) -> Student:
    if name == "tiny+smoothing":
        return _model("tiny", smoothing=True, future_ms=32.0)
    return _model(name)


@pytest.mark.parametrize("name", CASES)
def test_lookahead_is_exact(name: str) -> None:
    model = _case(name)
    gen = torch.Generator().manual_seed(1)
    audio = 0.3 * torch.randn(1, 16000, generator=gen)
    anchor = 8000
    base = _frame(model, audio, anchor)
    ahead = anchor + model.lookahead_samples  # first sample the frame must NOT read
    before = anchor - model.left_context - 1  # last sample before the window

    later = audio.clone()
    later[0, ahead:] += torch.randn(16000 - ahead, generator=gen)
    assert torch.equal(_frame(model, later, anchor), base), "audio beyond the lookahead changed the frame"

    earlier = audio.clone()
    earlier[0, : before + 1] += torch.randn(before + 1, generator=gen)
    assert torch.equal(_frame(model, earlier, anchor), base), "audio before the past window changed the frame"

    for edge in (ahead - 1, before + 1):  # the last and the first sample inside the window both matter
        poked = audio.clone()
        poked[0, edge] += 1.0
        assert not torch.equal(_frame(model, poked, anchor), base), f"sample {edge - anchor:+d} was ignored"


@pytest.mark.parametrize("name", CASES)
def test_full_pass_equals_windowed_model(name: str) -> None:
    model = _case(name)
    n = 9000
    audio = 0.3 * torch.randn(2, n, generator=torch.Generator().manual_seed(2))
    anchors = torch.arange(0, n + 64, 64 * 17)  # includes anchors near both edges (zero-padded)
    with torch.no_grad():
        full = model.forward_full(audio, anchors)
    padded = torch.nn.functional.pad(audio, (model.left_context, model.window_samples))
    windows = torch.stack([padded[:, a : a + model.window_samples] for a in anchors.tolist()], dim=1)
    with torch.no_grad():
        windowed = model(windows.flatten(0, 1)).view(2, len(anchors), -1)
    assert full.shape == (2, len(anchors), len(model.config.channel_names))
    torch.testing.assert_close(full, windowed, atol=1e-5, rtol=0)
    assert float(full.min()) >= 0.0 and float(full.max()) <= 1.0


def test_chunk_mode_and_per_item_anchors_match_padded_mode() -> None:
    model = _model("realtime")
    audio = 0.3 * torch.randn(1, 20000, generator=torch.Generator().manual_seed(3))
    anchors = torch.tensor([[8000, 11200, 14400]])
    with torch.no_grad():
        whole = model.forward_full(audio, anchors)
    start = 8000 - model.left_context - 64 * 3
    chunk = audio[:, start : 14400 + model.lookahead_samples + 128]
    with torch.no_grad():
        part = model.forward_full(chunk, anchors - start, pad=False)
    torch.testing.assert_close(part, whole, atol=1e-6, rtol=0)
    with pytest.raises(StudentConfigError):
        model.forward_full(chunk, torch.tensor([64]), pad=False)


def test_lookahead_is_derived_from_layers() -> None:
    assert _model("small").lookahead_ms == 256.0
    assert _model("causal").lookahead_ms == 0.0
    assert _model("realtime").lookahead_ms == 64.0 + 16.0  # 64 ms of audio + one 16 ms smoothing step
    assert _model("edge").lookahead_ms <= 32.0 and count_params(_model("edge")) <= 50_000
    # edge-mel's fixed filterbank counts: its weights ship in every binary
    assert _model("edge-mel").lookahead_ms <= 32.0 and count_params(_model("edge-mel")) <= 50_000
    assert _model("causal-mel").lookahead_ms == 0.0
    assert _model("realtime-mel").lookahead_ms == _model("realtime").lookahead_ms
    assert 2.5e6 < count_params(_model("small")) < 3.5e6
    cfg = preset("tiny", future_ms=32.0)
    assert Student(cfg).window_samples == ms_to_samples(cfg.past_ms + cfg.future_ms)


def test_bad_windows_are_refused() -> None:
    with pytest.raises(StudentConfigError, match="multiple of 4"):
        preset("tiny", future_ms=30.0)
    with pytest.raises(StudentConfigError, match="receptive field"):
        preset("tiny", past_ms=4.0, future_ms=0.0)
    with pytest.raises(StudentConfigError, match="multiply"):
        preset("tiny", strides=(4, 4, 2), frontend_channels=(8, 8, 8))
    with pytest.raises(StudentConfigError, match="unknown student preset"):
        preset("huge")


def test_features_share_the_anchor_grid() -> None:
    model = _model("tiny", head_bottleneck=0)
    audio = torch.randn(1, 64 * 200)
    enc, feats = model.encode(audio, features=True)
    assert list(feats) == model.feature_names()
    for name, f in feats.items():
        expected = 200 - (model.feature_receptive_field(name) // ANCHOR_QUANTUM - 1)
        assert f.shape[-1] == expected, name
    assert torch.equal(feats["context.1"], enc)


def test_checkpoint_round_trip_including_pruned_widths(tmp_path) -> None:
    model = _model("tiny")
    pruned = Student(preset("tiny", frontend_channels=(8, 16, 48), context_channels=(40, 64)))
    for m in (model, pruned):
        path = tmp_path / f"{id(m)}.pt"
        save_student(path, m, note="hello")
        back = load_student(path)
        assert back.config == m.current_config()
        window = torch.randn(3, m.window_samples)
        with torch.no_grad():
            assert torch.equal(back(window), m.eval()(window))
        raw = torch.load(path, weights_only=True)
        assert raw["note"] == "hello" and isinstance(raw["config"], dict)
    assert describe(back)["params"] == count_params(pruned)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(StudentConfigError, match="junk.pt"):
        load_student(tmp_path / "junk.pt")
    assert np.isfinite(describe(model)["lookahead_ms"])


def test_head_bottleneck_starts_as_a_truncated_svd_of_the_source_head(tmp_path) -> None:
    torch.manual_seed(3)
    source = _model("tiny", head_bottleneck=0)  # 64 encoder channels, no bottleneck
    window = torch.randn(4, source.window_samples)
    with torch.no_grad():
        want = source(window)
        errors = {}
        for rank in (64, 16, 4):
            student = Student(preset("tiny", head_bottleneck=rank)).eval()
            assert student.warm_start_from(source) == "factorized"
            errors[rank] = float((student(window) - want).abs().max())
            assert (count_params(student) < count_params(source)) == (rank < 64)
            path = tmp_path / f"r{rank}.pt"
            save_student(path, student)
            assert load_student(path).config == student.current_config() == student.config
    assert errors[64] < 1e-5  # full rank: the same function, just factored
    assert errors[4] > errors[16] > 1e-4  # truncation drops real directions, more at lower rank
    assert Student(preset("tiny", head_bottleneck=0)).warm_start_from(source) == "exact"
    assert Student(preset("edge")).warm_start_from(source) is None
    with pytest.raises(StudentConfigError, match="head_bottleneck"):
        preset("tiny", head_bottleneck=-1)


def test_mulaw_input_is_companded_inside_and_left_to_the_host_in_the_binary_form(tmp_path) -> None:
    model = _model("edge", input_encoding="mulaw")
    linear = _model("edge")  # same seed: the very same weights
    x = (torch.randn(4, model.window_samples) * torch.tensor([[0.01], [0.05], [0.2], [0.6]])).clamp(-1, 1)
    y = encode_input(x, model.config)
    # G.711 mu-law: odd, monotone, [-1, 1] -> [-1, 1], and quiet samples get most of the range
    assert torch.allclose(-encode_input(-x, model.config), y) and float(y.abs().max()) <= 1.0
    assert float(encode_input(torch.tensor([0.01]), model.config)) == pytest.approx(0.2285, abs=1e-3)
    assert np.allclose(encode_input(x.numpy(), model.config), y.numpy(), atol=1e-6)
    with torch.no_grad():
        out = model(x)
        assert torch.equal(out, linear(y))  # the model reads the companded audio ...
        assert (
            torch.equal(linear.input_encoding(x), x) and (y - x).abs().max() > 0.1
        )  # ... not the linear one
        binary = model.binary_form()
        assert binary.config.input_encoding == "linear" and binary.binary_form() is binary
        assert torch.allclose(binary(y), out, atol=1e-6)  # the exported form takes companded audio
        assert linear.binary_form() is linear
    path = tmp_path / "m.pt"
    save_student(path, model)
    back = load_student(path)
    assert back.config.input_encoding == "mulaw" and back.config.input_mu == 255.0
    with torch.no_grad():
        assert torch.equal(back(x), out)
    with pytest.raises(StudentConfigError, match="input_encoding 'alaw' unknown"):
        preset("edge", input_encoding="alaw")


def test_logmel_frontend_is_the_windowed_dft_power_through_mel_filters() -> None:
    """The fixed convs compute numpy's Hamming-windowed rfft power, mel-filtered, centred log, per 4 ms cell, each
    window ending at its cell's last sample, with both filter sets on a per-row int8 grid (so int8-stored binaries
    carry them without loss): exactly with the grid filters; against the textbook filters, within 0.02 (0.35 dB)
    on every band within 30 dB of the frame's loudest and 0.06 (1 dB) within 40 dB (the grid's rounding leaks into
    quieter bands); the config refuses what the filterbank cannot do."""
    from students.model import LOGMEL_FLOOR, LOGMEL_SCALE, LogMel, int8_grid, mel_filters

    config = preset("tiny-mel")
    fb = LogMel(config)
    n = config.logmel_samples
    t = np.arange(16000) / 16000.0
    audio = (
        0.3 * np.sin(2 * np.pi * 440.0 * t) + 0.01 * np.random.default_rng(0).standard_normal(16000)
    ).astype(np.float32)
    with torch.no_grad():
        got = fb(torch.from_numpy(audio)[None])[0].numpy()  # [bands, positions]
    k = np.arange(n)
    window = np.hamming(n)
    angle = 2 * np.pi * np.outer(np.arange(n // 2 + 1), k) / n
    exact = {
        "dft": np.concatenate([np.cos(angle) * window, -np.sin(angle) * window]),
        "mel": mel_filters(n, 64),
    }
    for name, rows in exact.items():  # on the grid: integers times a per-row scale of max|row| / 127
        w = getattr(fb, name).weight.numpy().reshape(len(rows), -1)
        np.testing.assert_array_equal(w, int8_grid(rows))
        scale = np.abs(w).max(axis=1, keepdims=True) / 127
        q = w / np.where(scale > 0, scale, 1)
        assert np.abs(q - np.round(q)).max() < 1e-3 and np.abs(q).max() <= 127.001
    bins = n // 2 + 1

    def logmel(frame: np.ndarray, dft: np.ndarray, mel: np.ndarray) -> np.ndarray:
        z = dft.astype(np.float64) @ frame
        return (np.log(mel @ (z[:bins] ** 2 + z[bins:] ** 2) + LOGMEL_FLOOR) - fb.center) * LOGMEL_SCALE

    grid = {name: int8_grid(rows) for name, rows in exact.items()}
    for q in (0, 7, 100, got.shape[1] - 1):
        frame = audio[ANCHOR_QUANTUM * q : ANCHOR_QUANTUM * q + n].astype(np.float64)
        np.testing.assert_allclose(got[:, q], logmel(frame, grid["dft"], grid["mel"]), atol=2e-3)
        power = np.abs(np.fft.rfft(frame * window)) ** 2  # the textbook log-mel
        textbook = (np.log(exact["mel"] @ power + LOGMEL_FLOOR) - fb.center) * LOGMEL_SCALE
        for db, tolerance in ((30, 0.02), (40, 0.06)):  # bands within db dB of the loudest: 0.35 dB / 1 dB
            loud = textbook > textbook.max() - LOGMEL_SCALE * np.log(10 ** (db / 10))
            assert loud.sum() >= 4 and np.abs(got[loud, q] - textbook[loud]).max() < tolerance, (q, db)
    assert got.shape[1] == (16000 - n) // ANCHOR_QUANTUM + 1
    peak = int(np.argmax(got[:, 100]))  # the 440 Hz tone lands in the band whose centre is nearest
    assert abs(np.fft.rfftfreq(n, 1 / 16000)[int(np.argmax(exact["mel"][peak]))] - 440.0) < 100.0
    with pytest.raises(StudentConfigError, match="1x1"):
        preset("tiny-mel", strides=(4,), frontend_channels=(8,))
    with pytest.raises(StudentConfigError, match="logmel_ms"):
        preset("tiny-mel", logmel_ms=10.0)
    with pytest.raises(StudentConfigError, match="frontend 'fft' unknown"):
        preset("tiny", frontend="fft")


def test_frequency_warp_moves_a_tone_by_alpha_below_the_knee_and_keeps_the_ends() -> None:
    """VTLP (training only): a 1 kHz tone's spectral peak moves to alpha x 1 kHz (within a bin), power at 0 Hz and
    Nyquist stays put, alpha 1 is the identity, rows warp independently, and the log-mel front end uses it only
    while ``warp`` is set."""
    from students.model import VTLP_CUTOFF, LogMel, warp_spectrum

    config = preset("tiny-mel")
    n = config.logmel_samples
    t = np.arange(n) / 16000.0
    power = torch.from_numpy(np.abs(np.fft.rfft(np.sin(2 * np.pi * 1000.0 * t) * np.hamming(n))) ** 2)
    power = power.float()[None, :, None].repeat(3, 1, 2)  # [3 rows, bins, 2 frames]
    power[:, 0] = 5.0
    power[:, -1] = 7.0
    hz = np.fft.rfftfreq(n, 1 / 16000)
    alpha = torch.tensor([1.0, 1.15, 0.85])
    warped = warp_spectrum(power, alpha)
    assert torch.equal(warped[0], power[0])
    for row, a in enumerate(alpha.tolist()):
        peak = hz[int(warped[row, :, 0].argmax())]
        assert abs(peak - 1000.0 * a) <= hz[1], (a, peak)
        assert warped[row, 0, 0] == 5.0 and torch.isclose(warped[row, -1, 0], torch.tensor(7.0))
    assert torch.equal(warped[..., 0], warped[..., 1])
    # above the knee the map is linear up to Nyquist: a bin just under Nyquist reads from just under Nyquist
    assert VTLP_CUTOFF < 1
    fb = LogMel(config)
    audio = torch.from_numpy(np.random.default_rng(1).normal(0, 0.1, (3, 4 * n)).astype("f4"))
    with torch.no_grad():
        plain = fb(audio)
        fb.warp = alpha
        moved = fb(audio)
        fb.warp = None
        again = fb(audio)
    assert torch.equal(plain, again) and torch.equal(plain[0], moved[0])
    assert (plain[1:] - moved[1:]).abs().max() > 0.05
