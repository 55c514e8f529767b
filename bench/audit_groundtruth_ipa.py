"""Audit the ground truth's phoneme table against espeak-ng's own IPA, language by language.

espeak-ng mnemonics are per language: the same symbol can name different sounds in two languages. For every
corpus language this speaks ``--sentences`` sentences word by word through ``espeak_TextToPhonemes`` twice (mnemonics,
then IPA, one separator per phoneme), pairs the two, and prints each mnemonic's IPA per language with the viseme
the ground truth gives it there (``GroundTruthConfig.viseme``). It flags every vowel whose lip rounding disagrees
with its viseme (a rounded IPA monophthong on an unrounded class or the reverse). ``--no-overrides`` audits the shared
table alone (what ground truth version 1 used).

    python bench/audit_groundtruth_ipa.py [--sentences 40] [--no-overrides]
"""

from __future__ import annotations

import argparse
import ctypes
from collections import Counter, defaultdict

import numpy as np

from teacher.groundtruth import STRESS_MARKS, GroundTruthConfig
from teacher.text import WORD_LOCALES, sentence
from teacher.tts import _engine

# monophthong lip rounding; the open vowels (a, ɑ, ɒ, ...) are neither: the jaw dominates them (class "aa")
ROUNDED = set("yʏøœuʊoɔɵʉ")
UNROUNDED = set("iɪɨeɛəɜɤɯ")
VOWELS = ROUNDED | UNROUNDED | set("aɑɒæɐʌɶ")
ROUNDED_VISEMES, UNROUNDED_VISEMES = {"O", "U"}, {"aa", "E", "I"}
SEPARATOR = ord("|") << 8
IPA_MODE = 2


def _phonemes(lib, text: str, mode: int) -> list[str]:
    buf = ctypes.create_string_buffer(text.encode() + b"\0")
    ptr = ctypes.c_void_p(ctypes.addressof(buf))
    out: list[str] = []
    while ptr.value:
        res = lib.espeak_TextToPhonemes(ctypes.byref(ptr), 1, mode)
        if res:
            out += [p for p in res.decode("utf-8", "replace").replace(" ", "|").split("|") if p]
    return out


def audit(n_sentences: int, config: GroundTruthConfig) -> tuple[dict, list[str]]:
    lib = _engine().lib
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
    lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
    seen: dict[tuple[str, str], Counter] = defaultdict(Counter)
    rng = np.random.default_rng(0)
    with _engine().lock:
        for language in sorted(WORD_LOCALES):
            lib.espeak_SetVoiceByName(language.encode())
            for _ in range(n_sentences):
                for word in sentence(language, rng).split():
                    mnem = _phonemes(lib, word, SEPARATOR)
                    ipa = _phonemes(lib, word, SEPARATOR | IPA_MODE)
                    if len(mnem) == len(ipa):
                        for m, i in zip(mnem, ipa):
                            seen[(language, m.lstrip(STRESS_MARKS))][i.lstrip("ˈˌ")] += 1
    flags = []
    for (language, m), ipas in sorted(seen.items()):
        ipa = ipas.most_common(1)[0][0]
        vowels = [c for c in ipa if c in VOWELS]
        if len(vowels) != 1:  # consonants, and diphthongs (their two ends may differ in rounding)
            continue
        vowel, vis = vowels[0], config.viseme(m, language)
        if (vowel in ROUNDED and vis in UNROUNDED_VISEMES) or (vowel in UNROUNDED and vis in ROUNDED_VISEMES):
            flags.append(f"{language}: {m!r} is /{ipa}/ but maps to viseme {vis}")
    return seen, flags


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sentences", type=int, default=40, help="sentences per language (default 40)")
    ap.add_argument(
        "--no-overrides", action="store_true", help="audit the shared table alone (ground truth v1)"
    )
    args = ap.parse_args()
    config = GroundTruthConfig(language_phonemes={}) if args.no_overrides else GroundTruthConfig()
    seen, flags = audit(args.sentences, config)
    by_mnemonic: dict[str, dict[str, str]] = defaultdict(dict)
    for (language, m), ipas in seen.items():
        by_mnemonic[m][language] = ipas.most_common(1)[0][0]
    print(
        f"# {len(by_mnemonic)} mnemonics over {len(WORD_LOCALES)} languages ({args.sentences} sentences each)"
    )
    print(f"{'mnemonic':<9}{'viseme':<8}IPA by language (viseme in that language where it differs)")
    for m in sorted(by_mnemonic):
        shared = config.viseme(m)
        langs = "  ".join(
            f"{lang}:{ipa}" + (f"[{config.viseme(m, lang)}]" if config.viseme(m, lang) != shared else "")
            for lang, ipa in sorted(by_mnemonic[m].items())
        )
        print(f"{m:<9}{shared:<8}{langs}")
    print(f"\nrounding disagreements: {len(flags)}")
    for f in flags:
        print("  " + f)


if __name__ == "__main__":
    main()
