"""load_audio turns every usable file into mono 16 kHz float32 and every bad one into one clear error line."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import soundfile as sf

from compress.cli import main
from teacher.audio import AudioError, iter_audio_files, load_audio, load_many, save_wav
from teacher.constants import SAMPLE_RATE


def _sine(freq: float, sr: int, seconds: float = 0.5, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _dominant_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)[np.argmax(spectrum)])


@pytest.fixture
def files(tmp_path):
    """One file for every case users hit; name -> path."""
    f = {}
    f["good"] = tmp_path / "good.wav"
    sf.write(f["good"], _sine(440, SAMPLE_RATE), SAMPLE_RATE, subtype="PCM_16")
    f["missing"] = tmp_path / "missing.wav"
    f["empty"] = tmp_path / "empty.wav"
    f["empty"].write_bytes(b"")
    f["zero_length"] = tmp_path / "zero.wav"
    sf.write(f["zero_length"], np.zeros(0, np.float32), SAMPLE_RATE)
    f["not_audio"] = tmp_path / "notes.wav"
    f["not_audio"].write_text("this is a text file, not audio\n" * 10)
    f["unsupported"] = tmp_path / "slides.pptx"
    f["unsupported"].write_bytes(b"PK\x03\x04" + bytes(200))
    whole = tmp_path / "whole.wav"
    sf.write(whole, _sine(300, SAMPLE_RATE, 1.0), SAMPLE_RATE, subtype="PCM_16")
    f["truncated"] = tmp_path / "truncated.wav"
    f["truncated"].write_bytes(whole.read_bytes()[:20_000])
    nan = _sine(300, SAMPLE_RATE)
    nan[100] = np.nan
    f["nan"] = tmp_path / "nan.wav"
    sf.write(f["nan"], nan, SAMPLE_RATE, subtype="FLOAT")
    inf = _sine(300, SAMPLE_RATE)
    inf[5] = np.inf
    f["inf"] = tmp_path / "inf.wav"
    sf.write(f["inf"], inf, SAMPLE_RATE, subtype="FLOAT")
    f["silent"] = tmp_path / "silent.flac"
    sf.write(f["silent"], np.zeros(8000, np.float32), SAMPLE_RATE)
    return f


EXPECTED = {
    "missing": "no such file",
    "empty": "empty file",
    "zero_length": "zero-length",
    "not_audio": "not a readable WAV",
    "unsupported": "unsupported",
    "truncated": "truncated",
    "nan": "NaN or Inf",
    "inf": "NaN or Inf",
    "silent": "silent",
}


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_bad_file_gives_one_line_naming_file(files, case):
    with pytest.raises(AudioError) as info:
        load_audio(files[case])
    message = str(info.value)
    assert EXPECTED[case] in message
    assert str(files[case]) in message and "\n" not in message


def test_batch_goes_on_past_every_bad_file(files):
    order = ["missing", "good", *sorted(set(EXPECTED) - {"missing"}), "good"]
    loaded, errors = load_many([files[c] for c in order])
    assert [p.name for p, _ in loaded] == ["good.wav", "good.wav"]
    assert len(errors) == len(EXPECTED)


def test_too_long_refused_from_header_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "long.wav"
    sf.write(path, _sine(200, 8000, 3.0), 8000, subtype="PCM_16")
    monkeypatch.setattr(sf, "read", lambda *a, **k: pytest.fail("decoded a file refused by its header"))
    with pytest.raises(AudioError, match="longer than the 2 s limit"):
        load_audio(path, max_seconds=2.0)


def test_default_limit_refuses_hours_long_header(tmp_path):
    # A 1000 Hz 8-bit mono WAV of 11 minutes is only 660 kB but exceeds MAX_AUDIO_SECONDS (600 s).
    path = tmp_path / "eleven_minutes.wav"
    sf.write(path, _sine(100, 1000, 660.0), 1000, subtype="PCM_U8")
    with pytest.raises(AudioError, match="660.0 s is longer"):
        load_audio(path)


def test_truncated_wav_detected_by_header_size(tmp_path):
    path = tmp_path / "cut.wav"
    sf.write(path, _sine(300, SAMPLE_RATE), SAMPLE_RATE, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data[:-2]))
    with pytest.raises(AudioError, match="truncated WAV: header declares 2 more"):
        load_audio(path)


def test_truncated_flac_detected(tmp_path):
    path = tmp_path / "cut.flac"
    sf.write(path, _sine(300, SAMPLE_RATE, 1.0), SAMPLE_RATE)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(AudioError, match="truncated"):
        load_audio(path)


def test_8bit_unsigned_wav_loads_centered(tmp_path):
    path = tmp_path / "u8.wav"
    sf.write(path, _sine(440, SAMPLE_RATE), SAMPLE_RATE, subtype="PCM_U8")
    assert sf.info(path).subtype == "PCM_U8"
    x = load_audio(path)
    assert x.dtype == np.float32 and len(x) == SAMPLE_RATE // 2
    assert abs(float(x.mean())) < 0.01 and 0.45 < float(np.abs(x).max()) <= 0.52
    assert abs(_dominant_hz(x) - 440) < 4


def test_96khz_resampled_keeps_frequency(tmp_path):
    path = tmp_path / "hi.flac"
    sf.write(path, _sine(1000, 96_000, 1.0), 96_000, subtype="PCM_24")
    x = load_audio(path)
    assert len(x) == SAMPLE_RATE
    assert abs(_dominant_hz(x) - 1000) < 2
    assert abs(float(np.sqrt(np.mean(x[1000:-1000] ** 2))) - 0.5 / np.sqrt(2)) < 0.01


def test_six_channels_mix_to_mono(tmp_path):
    path = tmp_path / "surround.wav"
    chans = np.zeros((8000, 6), np.float32)
    chans[:, 0] = 0.6
    chans[:, 3] = -0.3
    chans[:, 5] = _sine(440, SAMPLE_RATE)
    sf.write(path, chans, SAMPLE_RATE, subtype="FLOAT")
    x = load_audio(path)
    np.testing.assert_allclose(x, chans.mean(axis=1), atol=1e-6)


def test_ogg_and_save_wav_round_trip(tmp_path):
    src = _sine(440, 22_050)
    sf.write(tmp_path / "a.ogg", src, 22_050, format="OGG", subtype="VORBIS")
    x = load_audio(tmp_path / "a.ogg")
    assert abs(_dominant_hz(x) - 440) < 4
    save_wav(tmp_path / "out" / "b.wav", x)
    y = load_audio(tmp_path / "out" / "b.wav")
    np.testing.assert_allclose(y, x, atol=1 / 32767 + 1e-6)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["b.wav"]  # no temp file left


def test_iter_audio_files_recursive_sorted_and_manifest(tmp_path):
    for rel in ["b/x.flac", "a.wav", "b/c/y.OGG", "notes.txt"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    assert [p.relative_to(tmp_path).as_posix() for p in iter_audio_files(tmp_path)] == [
        "a.wav",
        "b/c/y.OGG",
        "b/x.flac",
    ]
    manifest = tmp_path / "list.txt"
    manifest.write_text("# takes\na.wav\n\nb/x.flac\n")
    assert iter_audio_files(manifest) == [tmp_path / "a.wav", tmp_path / "b/x.flac"]


def test_wav_header_parser_handles_odd_chunks(tmp_path):
    # A LIST chunk of odd length before 'data' (padded to even) must not confuse the truncation check.
    pcm = (np.round(_sine(500, SAMPLE_RATE) * 32767)).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, SAMPLE_RATE, SAMPLE_RATE * 2, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"LIST" + struct.pack("<I", 3) + b"abc\x00"
    body += b"data" + struct.pack("<I", len(pcm)) + pcm
    path = tmp_path / "list.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    assert len(load_audio(path)) == len(pcm) // 2


def test_cli_audio_check_reports_each_file(files, capsys):
    code = main(["audio", "check", str(files["good"]), str(files["silent"]), str(files["missing"])])
    out = capsys.readouterr().out
    assert code == 1
    assert "ok    " in out and out.count("FAIL") == 2 and "1 ok, 2 failed" in out
    assert main(["audio", "check", str(files["good"])]) == 0
