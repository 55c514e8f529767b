"""Sentences to speak, drawn only from word lists that an installed package ships (Faker's locale word lists).

Nothing is downloaded. Faker's ``lorem`` providers hold real-language word lists for the locales in
``WORD_LOCALES``; sentences are sampled from them with a numpy ``Generator``, so a seed fixes every sentence.
Each sentence carries at least ``min_bilabial_words`` words spelled with p/b/m, so lip closures are frequent
enough to learn and to evaluate; commas are inserted now and then to make phrase pauses.
"""

from __future__ import annotations

import functools

import numpy as np

from teacher.errors import FacedistillError

# espeak-ng language -> Faker locale whose lorem provider holds a real word list of that language.
WORD_LOCALES = {
    "en-us": "en_US",
    "en-gb-x-rp": "en_US",
    "de": "de_DE",
    "fr": "fr_FR",
    "es": "es_ES",
    "it": "it_IT",
    "nl": "nl_NL",
    "pl": "pl_PL",
    "cs": "cs_CZ",
    # not in the default corpus: extra languages for pseudo-labeling (reports/bench/extra_languages.txt)
    "da": "da_DK",
    "el": "el_GR",
    "la": "la",
    "mk": "mk_MK",
    "ru": "ru_RU",
    "uk": "uk_UA",
}
# p/b/m in Latin, Cyrillic and Greek script (Greek beta is /v/; its /b/ is spelled with mu-pi)
BILABIAL_LETTERS = frozenset("pbmпбмπμ")


@functools.cache
def word_list(language: str) -> tuple[str, ...]:
    """The (deduplicated, sorted) single words of the Faker word list for an espeak-ng language."""
    if language not in WORD_LOCALES:
        msg = f"language {language!r}: no packaged word list (known: {', '.join(sorted(WORD_LOCALES))})"
        raise FacedistillError(msg)
    from faker import Faker

    words = Faker(WORD_LOCALES[language]).get_words_list()
    return tuple(sorted({w.lower() for w in words if w.isalpha()}))


@functools.cache
def _bilabial_words(language: str) -> tuple[str, ...]:
    return tuple(w for w in word_list(language) if BILABIAL_LETTERS & set(w))


def sentence(
    language: str,
    rng: np.random.Generator,
    *,
    min_words: int = 4,
    max_words: int = 14,
    min_bilabial_words: int = 3,
) -> str:
    """One sentence of ``min_words..max_words`` words, most with at least ``min_bilabial_words`` words holding p/b/m.

    The words missing to ``min_bilabial_words`` are written into random slots, and a slot may already hold a p/b/m
    word, so a sentence is only sure of ``ceil(min_bilabial_words / 2)`` of them. Kept as it is: making it exact
    would change every sentence of the default corpus and so the reference report.
    """
    n = int(rng.integers(min_words, max_words + 1))
    words, bilabial = word_list(language), _bilabial_words(language)
    picks = [words[int(i)] for i in rng.integers(0, len(words), size=n)]
    have = sum(bool(BILABIAL_LETTERS & set(w)) for w in picks)
    slots = rng.permutation(n)
    for slot in slots[: max(0, min(min_bilabial_words, n) - have)]:
        picks[int(slot)] = bilabial[int(rng.integers(0, len(bilabial)))]
    if n >= 6 and rng.random() < 0.5:  # a phrase pause
        cut = int(rng.integers(2, n - 2))
        picks[cut] += ","
    text = " ".join(picks)
    return text[0].upper() + text[1:] + ("?" if rng.random() < 0.15 else ".")
