"""Sentences: seeded, every language gets words with p/b/m in its own script, and the speech really closes the lips."""

import numpy as np
import pytest

from teacher.errors import FacedistillError
from teacher.groundtruth import BILABIAL_VISEME, viseme_of
from teacher.text import BILABIAL_LETTERS, WORD_LOCALES, sentence
from teacher.tts import LANGUAGES, synthesize


def test_every_word_list_language_synthesises():
    assert set(WORD_LOCALES) <= set(LANGUAGES)


def test_a_seed_fixes_the_sentence():
    assert sentence("ru", np.random.default_rng(3)) == sentence("ru", np.random.default_rng(3))
    assert sentence("ru", np.random.default_rng(3)) != sentence("ru", np.random.default_rng(4))


@pytest.mark.parametrize("language", ["en-us", "ru", "uk", "mk", "el", "da"])
def test_sentences_carry_bilabial_words_that_close_the_lips(language):
    rng = np.random.default_rng(11)
    counts = []
    for k in range(20):
        text = sentence(language, rng, min_bilabial_words=3)
        words = [w.strip(",.?").lower() for w in text.split()]
        counts.append(sum(bool(BILABIAL_LETTERS & set(w)) for w in words))
        assert counts[-1] >= 2, text  # ceil(3 / 2): see sentence's docstring
        if k >= 3:
            continue
        _, phonemes = synthesize(text, voice=language)
        # the letters were picked for their sound: espeak-ng speaks at least one p/b/m for them
        assert any(viseme_of(p.phoneme) == BILABIAL_VISEME for p in phonemes), (language, text)
    assert np.mean(np.array(counts) >= 3) >= 0.7, counts


def test_unknown_language_is_refused():
    with pytest.raises(FacedistillError, match="no packaged word list"):
        sentence("tl", np.random.default_rng(0))
