"""Live Link Face and rig CSVs round-trip, resample onto the frame grid, and studio captures import as a dataset."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from compress.cli import main
from teacher.constants import ARKIT_52, SAMPLE_RATE, frame_times, num_frames
from teacher.dataset import Dataset
from teacher.livelink import (
    LIVELINK_HEADER,
    CurveFileError,
    format_timecode,
    import_labeled,
    parse_timecode,
    read_livelink_csv,
    read_rig_csv,
    resample_to_frames,
    write_livelink_csv,
    write_rig_csv,
)

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("fps", [30, 60])
def test_livelink_round_trip_and_timecodes(tmp_path, fps):
    curves = RNG.random((fps + 5, 52), dtype=np.float32)
    path = tmp_path / "take.csv"
    write_livelink_csv(path, curves, fps=fps, start_timecode="01:02:03:04")
    lines = path.read_text().splitlines()
    assert lines[0].split(",") == list(LIVELINK_HEADER)
    assert lines[1].startswith("01:02:03:04.000,61,")
    # one second later the FF field has wrapped back to 04 and the seconds moved on
    assert lines[1 + fps].startswith("01:02:04:04.000,61,")
    assert lines[1 + fps - 4].startswith("01:02:04:00.000,")
    back = read_livelink_csv(path)
    assert back.fps == fps and back.channel_names == list(ARKIT_52)
    np.testing.assert_allclose(back.curves, curves, atol=5e-7)
    np.testing.assert_allclose(back.times, np.arange(len(curves)) / fps, atol=1e-9)


def test_livelink_columns_matched_by_name_not_position(tmp_path):
    curves = np.zeros((3, 52), np.float32)
    curves[:, ARKIT_52.index("jawLeft")] = 0.25
    curves[:, ARKIT_52.index("mouthRight")] = 0.75
    path = tmp_path / "take.csv"
    write_livelink_csv(path, curves, fps=30)
    header = path.read_text().splitlines()[0].split(",")
    row = path.read_text().splitlines()[1].split(",")
    assert float(row[header.index("JawLeft")]) == 0.25 and float(row[header.index("MouthRight")]) == 0.75
    assert header.index("JawRight") < header.index("JawLeft")  # the app's own order, not ARKit's
    np.testing.assert_array_equal(read_livelink_csv(path).curves, curves)


def test_livelink_subframes_and_inferred_fps(tmp_path):
    header = ",".join(LIVELINK_HEADER)
    zeros = ",".join(["0"] * 61)
    rows = ["14:03:52:58.500", "14:03:52:59.500", "14:03:53:00.500"]
    (tmp_path / "t.csv").write_text(header + "\n" + "\n".join(f"{r},61,{zeros}" for r in rows) + "\n")
    take = read_livelink_csv(tmp_path / "t.csv")
    assert take.fps == 60
    np.testing.assert_allclose(take.times, [0, 1 / 60, 2 / 60])
    assert parse_timecode("00:00:01:15.5", 30) == 45.5
    assert format_timecode(30 * 3600 + 31, 30) == "01:00:01:01.000"


def _llf(tmp_path, rows: list[str], header=LIVELINK_HEADER):
    path = tmp_path / "bad.csv"
    path.write_text(",".join(header) + "\n" + "\n".join(rows) + "\n")
    return path


def test_livelink_errors_name_file_row_and_column(tmp_path):
    zeros = ",".join(["0"] * 61)
    path = _llf(tmp_path, [f"00:00:00:00,61,{zeros}", f"00:00:00:01,61,0,abc,{zeros[4:]}"])
    with pytest.raises(
        CurveFileError, match=r"bad\.csv: row 3 column 'EyeLookDownLeft': 'abc' is not a number"
    ):
        read_livelink_csv(path)
    path = _llf(tmp_path, [f"00:00:00:05,61,{zeros}", f"00:00:00:04,61,{zeros}"])
    with pytest.raises(CurveFileError, match="row 3: Timecode does not increase"):
        read_livelink_csv(path)
    header = [h for h in LIVELINK_HEADER if h != "JawOpen"]
    path = _llf(tmp_path, [f"00:00:00:00,61,{zeros[2:]}"], header=header)
    with pytest.raises(CurveFileError, match="missing blendshape columns jawOpen"):
        read_livelink_csv(path)
    path = _llf(tmp_path, [f"00:00:00:00,61,{zeros[2:]}"])
    with pytest.raises(CurveFileError, match="row 2 has 62 fields, the header has 63"):
        read_livelink_csv(path)
    path = _llf(tmp_path, [f"12 o'clock,61,{zeros}"])
    with pytest.raises(CurveFileError, match="row 2 column 'Timecode'"):
        read_livelink_csv(path)


def test_rig_csv_round_trip_any_channels(tmp_path):
    names = ["lipPressL", "lip_press_R", "JAW.open", "tongue up"]
    curves = RNG.normal(size=(17, 4)).astype(np.float32)
    path = tmp_path / "rig.csv"
    write_rig_csv(path, curves, fps=60, channel_names=names)
    back = read_rig_csv(path)
    assert back.channel_names == names and back.fps == 60
    np.testing.assert_allclose(back.curves, curves, atol=5e-7)
    np.testing.assert_allclose(back.times, frame_times(17, 60), atol=1e-6)
    # the written times are the dataset's own anchors, so resampling back to the grid is exact
    np.testing.assert_allclose(resample_to_frames(back.times, back.curves, 17, 60), curves, atol=5e-7)


def test_resample_linear_onto_frame_anchors():
    times = np.array([0.0, 0.1, 0.2])
    curves = np.array([[0.0, 1.0], [1.0, 1.0], [3.0, 1.0]], np.float32)
    grid = frame_times(8, 30)  # last anchor 0.232 s: beyond the capture, held at the edge
    out = resample_to_frames(times, curves, 8, 30)
    expected = np.where(grid <= 0.1, grid * 10, np.minimum(1 + (grid - 0.1) * 20, 3.0))
    np.testing.assert_allclose(out[:, 0], expected, atol=1e-6)
    np.testing.assert_allclose(out[:, 1], 1.0)


def _capture(folder, name, seconds, fps=60, csv_seconds=None):
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    sf.write(folder / f"{name}.wav", (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), SAMPLE_RATE)
    n = int((csv_seconds or seconds) * fps)
    curves = np.zeros((n, 52), np.float32)
    curves[:, ARKIT_52.index("jawOpen")] = np.arange(n) / fps  # a ramp: value = time in seconds
    write_livelink_csv(folder / f"{name}.csv", curves, fps=fps)


def test_import_labeled_folder_skips_bad_pairs(tmp_path):
    src = tmp_path / "captures"
    (src / "day2").mkdir(parents=True)
    _capture(src, "take1", 1.0)
    _capture(src / "day2", "take2", 0.7)
    _capture(src, "short_curves", 1.0, csv_seconds=0.2)
    sf.write(src / "orphan.wav", np.full(1600, 0.1, np.float32), SAMPLE_RATE)
    (src / "lonely.csv").write_text("time,a\n0,1\n")
    manifest, errors = import_labeled(src, tmp_path / "ds", fps=30)
    assert len(errors) == 3
    assert any("orphan.wav: no matching orphan.csv" in e for e in errors)
    assert any("lonely.csv: no matching audio" in e for e in errors)
    assert any("short_curves.csv: curves cover" in e for e in errors)
    ds = Dataset(tmp_path / "ds", verify=True)
    assert ds.fps == 30 and ds.channel_names == list(ARKIT_52) and manifest["label_source"] == "capture"
    utts = {u.id: u for u in ds}
    assert sorted(utts) == ["take1", "take2"]
    u = utts["take2"]
    assert u.labels.shape == (num_frames(len(u.audio), 30), 52) and u.phonemes == []
    np.testing.assert_array_equal(u.labels, u.truth)
    # the 60 fps ramp resampled onto the 30 fps anchor grid reads back the anchor times
    jaw = u.labels[:, ARKIT_52.index("jawOpen")]
    np.testing.assert_allclose(jaw, np.minimum(frame_times(len(jaw), 30), 41 / 60), atol=1e-5)


def test_cli_import_and_export(tmp_path, capsys):
    src = tmp_path / "captures"
    src.mkdir()
    _capture(src, "a", 0.5, fps=30)
    assert main(["livelink", "import", str(src), "--out", str(tmp_path / "ds"), "--fps", "30"]) == 0
    assert "imported 1 captures" in capsys.readouterr().out
    out = tmp_path / "a_out.csv"
    assert main(["livelink", "export", str(tmp_path / "ds"), "--utterance", "a", "--out", str(out)]) == 0
    back = read_livelink_csv(out)
    ds_curves = next(iter(Dataset(tmp_path / "ds"))).labels
    np.testing.assert_allclose(back.curves, ds_curves, atol=5e-7)
    assert main(["livelink", "export", str(tmp_path / "ds"), "--utterance", "zz", "--out", str(out)]) == 2
    assert "no utterance with id 'zz'" in capsys.readouterr().err
    npy = tmp_path / "pred.npy"
    np.save(npy, np.full((4, 52), 0.5, np.float32))
    assert main(["livelink", "export", str(npy), "--out", str(tmp_path / "p.csv"), "--fps", "60"]) == 0
    assert read_livelink_csv(tmp_path / "p.csv", fps=60).curves.shape == (4, 52)
