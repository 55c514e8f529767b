"""The embedded corpus: deterministic, resumable, with disjoint voices and a held-out test language."""

import json
import os
from dataclasses import replace

import numpy as np
import pytest

from compress.cli import main
from teacher.augment import AugmentConfig, apply_augment, change_speed, draw_augment
from teacher.constants import SAMPLE_RATE, num_frames
from teacher.corpus import SPLITS, CorpusConfig, CorpusError, build_corpus, plan_split
from teacher.dataset import Dataset
from teacher.groundtruth import curves_from_phonemes
from teacher.tts import synthesize


def shard_hashes(root):
    return {
        f"{split}/{e['file']}": e["sha256"]
        for split in SPLITS
        for e in Dataset(root / split).manifest["shards"]
    }


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    summary = build_corpus(root, config=CorpusConfig.quick())
    return root, summary


def test_same_seed_gives_identical_shards_and_another_seed_does_not(quick, tmp_path):
    root, _ = quick
    build_corpus(tmp_path / "again", config=CorpusConfig.quick(workers=2))
    assert shard_hashes(tmp_path / "again") == shard_hashes(root)
    other = CorpusConfig.quick(seed=1)
    assert plan_split(other, "labeled") != plan_split(CorpusConfig.quick(), "labeled")


def test_splits_voices_languages_and_labels(quick):
    root, summary = quick
    voices = {s: set(summary["splits"][s]["voices"]) for s in SPLITS}
    assert not voices["labeled"] & voices["unlabeled"]
    assert not voices["test"] & (voices["labeled"] | voices["unlabeled"])
    seen = set(summary["splits"]["labeled"]["languages"]) | set(summary["splits"]["unlabeled"]["languages"])
    assert set(summary["splits"]["test"]["languages"]) - seen  # a held-out language
    assert len(summary["languages"]) >= 5
    for split in SPLITS:
        ds = Dataset(root / split, verify=True)
        assert ds.fps == 30 and len(ds) > 0
        for utt in ds:
            assert utt.truth is not None and utt.truth.shape == (num_frames(len(utt.audio), 30), 52)
            if split == "labeled":
                np.testing.assert_array_equal(utt.labels, utt.truth)
                assert utt.meta["augment"] == {}
            else:
                assert utt.labels is None
            assert utt.meta["source"] == "espeak-ng" and utt.meta["split"] == split
            assert {"voice", "language", "text", "rate", "pitch", "augment_description"} <= set(utt.meta)
            assert utt.phonemes[0].start == 0 and utt.phonemes[-1].end == len(utt.audio)


def test_interrupted_build_resumes_without_rewriting_finished_shards(tmp_path):
    config = CorpusConfig.quick()
    build_corpus(tmp_path, config=config)
    before = shard_hashes(tmp_path)
    shards = sorted((tmp_path / "unlabeled" / "shards").glob("*.npz"))
    victim = shards[-1]
    victim.unlink()
    (tmp_path / "unlabeled" / "manifest.json").unlink()
    others = [p for p in sorted(tmp_path.glob("*/shards/*.npz"))]
    for p in others:
        os.utime(p, ns=(1_000_000_000, 1_000_000_000))  # an old mtime: a rewrite would change it
    summary = build_corpus(tmp_path, config=config)
    assert summary["built_shards"] == 1 and summary["reused_shards"] == len(others)
    assert all(p.stat().st_mtime_ns == 1_000_000_000 for p in others)
    assert victim.is_file()
    assert shard_hashes(tmp_path) == before


def test_a_folder_built_with_another_config_is_refused(tmp_path):
    build_corpus(tmp_path, config=CorpusConfig.quick())
    with pytest.raises(CorpusError, match="another corpus config"):
        build_corpus(tmp_path, config=CorpusConfig.quick(seed=3))


def test_config_round_trip_and_validation():
    cfg = CorpusConfig()
    assert CorpusConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(CorpusError, match="share voices"):
        CorpusConfig(test=replace(cfg.test, languages=("en-us",), variants=("m3",)), labeled=cfg.labeled)
    with pytest.raises(CorpusError, match="unseen"):
        CorpusConfig(test=replace(cfg.test, languages=("en-us", "fr")))
    with pytest.raises(CorpusError, match="non-reproducible"):
        CorpusConfig(labeled=replace(cfg.labeled, variants=("f3",)))


def test_speed_change_scales_intervals_exactly():
    audio, phonemes = synthesize("Bob and Pam made maps.", voice="en-us")
    fast, scaled = change_speed(audio, phonemes, 1.1)
    assert abs(len(fast) - len(audio) / 1.1) <= 2
    assert scaled[0].start == 0 and scaled[-1].end == len(fast)
    for old, new in zip(phonemes, scaled):
        assert abs(new.start - old.start / 1.1) <= 1 and new.phoneme == old.phoneme
    truth = curves_from_phonemes(scaled, len(fast), fps=60)
    assert truth.shape[0] == num_frames(len(fast), 60)


def test_augmentation_is_deterministic_and_hits_its_snr():
    audio, phonemes = synthesize("Bob and Pam made maps.", voice="en-us")
    rng = np.random.default_rng(0)
    config = AugmentConfig(
        p_noise=1.0, p_reverb=0.0, p_gain=0.0, p_band=0.0, p_speed=0.0, snr_db=(10.0, 10.0)
    )
    spec = draw_augment(rng, config)
    noisy, same_phonemes = apply_augment(audio, phonemes, spec)
    again, _ = apply_augment(audio, phonemes, spec)
    np.testing.assert_array_equal(noisy, again)
    assert same_phonemes == phonemes
    snr = 10 * np.log10(
        np.mean(audio.astype(np.float64) ** 2) / np.mean((noisy - audio).astype(np.float64) ** 2)
    )
    assert abs(snr - 10.0) < 0.5
    full = AugmentConfig(p_noise=1, p_reverb=1, p_gain=1, p_band=1, p_speed=1)
    out, _ = apply_augment(audio, phonemes, draw_augment(rng, full))
    assert out.dtype == np.float32 and np.abs(out).max() <= 1.0


def test_cli_build_info_and_plot(tmp_path, capsys):
    out = tmp_path / "c"
    assert main(["corpus", "build", "--quick", "--out", str(out), "--unlabeled-minutes", "0.3"]) == 0
    assert "unlabeled" in capsys.readouterr().out
    assert main(["corpus", "info", str(out)]) == 0
    assert "languages" in capsys.readouterr().out
    png = tmp_path / "u.png"
    assert main(["corpus", "plot", str(out), "--utterance", "labeled-000001", "--out", str(png)]) == 0
    assert png.stat().st_size > 10_000
    assert main(["corpus", "plot", str(tmp_path / "missing")]) == 2
    assert "no corpus manifest" in capsys.readouterr().err
    assert Dataset(out / "unlabeled").seconds < 0.5 * 60 * 1.5 and SAMPLE_RATE == 16000


def test_cli_labeled_languages_choose_the_labeled_splits_languages(tmp_path, capsys):
    out = tmp_path / "c"
    args = [
        "corpus",
        "build",
        "--quick",
        "--out",
        str(out),
        "--unlabeled-minutes",
        "0.2",
        "--test-minutes",
        "0.2",
    ]
    assert main([*args, "--labeled-languages", "es,cs"]) == 0
    assert set(Dataset(out / "labeled").manifest["info"]["languages"]) == {"es", "cs"}
    assert main([*args[:4], str(tmp_path / "bad"), "--labeled-languages", "en-us,xx"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "labeled language 'xx' unsupported" in err[-1]
