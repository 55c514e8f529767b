"""Random espeak-ng voices (teacher.voices): deterministic files, a working overlay, a clear error for a bad one."""

import os
import subprocess
import sys

import numpy as np
import pytest

from teacher.corpus import CorpusConfig, SplitConfig
from teacher.tts import ESPEAK_DATA_ENV, TTSError, espeak_data_path
from teacher.voices import random_variant, variant_names, write_overlay


def test_variants_are_drawn_from_the_seed_without_unseeded_noise():
    a = random_variant(np.random.default_rng(3), "fdv3_000")
    assert a == random_variant(np.random.default_rng(3), "fdv3_000")
    assert a != random_variant(np.random.default_rng(4), "fdv3_000")
    keys = {line.split()[0] for line in a.splitlines()}
    assert keys == {"language", "name", "pitch", "formant", "voicing", "tone"}  # no breath / flutter noise
    f2 = [line.split() for line in a.splitlines() if line.startswith("formant 2 ")][0]
    assert 65 <= int(f2[2]) <= 140


def test_overlay_speaks_with_the_new_voices_in_a_fresh_process(tmp_path):
    overlay, names = write_overlay(tmp_path / "data", seed=1, count=2)
    assert names == variant_names(1, 2) == ["fdv1_000", "fdv1_001"]
    assert (overlay / "voices" / "!v" / "m3").exists()  # the bundled variants stay available
    code = (
        "from teacher.tts import synthesize; import numpy as np;"
        "a, p = synthesize('Maybe Bob paid.', voice='en-us+fdv1_000');"
        "b, _ = synthesize('Maybe Bob paid.', voice='en-us+fdv1_001');"
        "c, _ = synthesize('Maybe Bob paid.', voice='en-us');"
        "print(len(p) > 5, len(a) != len(b) or not np.allclose(a, b), len(a) != len(c) or not np.allclose(a, c))"
    )
    env = {**os.environ, ESPEAK_DATA_ENV: str(overlay)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "True"]
    # rewriting with the same seed gives the same files
    text = (overlay / "voices" / "!v" / "fdv1_000").read_text()
    write_overlay(tmp_path / "data", seed=1, count=2)
    assert (overlay / "voices" / "!v" / "fdv1_000").read_text() == text


def test_the_bundled_data_folder_is_never_written():
    import espeakng_loader

    with pytest.raises(ValueError, match="bundled data folder"):
        write_overlay(espeakng_loader.get_data_path(), seed=0, count=1)


def test_a_bad_data_folder_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(ESPEAK_DATA_ENV, str(tmp_path))
    with pytest.raises(TTSError, match="not an espeak-ng data folder"):
        espeak_data_path()


def test_corpus_accepts_random_voice_names():
    split = SplitConfig(minutes=1.0, languages=("en-us",), variants=("fdv0_001",))
    CorpusConfig(unlabeled=split)  # no error
