"""Exact ground-truth face animation from phoneme intervals: espeak-ng mnemonic -> viseme -> ARKit-52 curves.

1. Every espeak-ng phoneme mnemonic maps to one of the visemes in ``VISEME_TARGETS`` (Oculus-style classes:
   sil, PP, FF, TH, DD, kk, CH, SS, nn, RR, aa, E, I, O, U, plus ``neutral`` for glottal/transition symbols).
   Stress marks (``'`` ``,`` ``%`` ``=``) and the length mark ``:`` are stripped; a symbol not in the table
   falls back by dropping espeak modifiers (``# 2 3 ~ ^ - ;``) and then by the class of its first character;
   a symbol that still has no class is logged and mapped to ``neutral`` (see ``unknown_symbols``).
   espeak-ng's mnemonics are per language, and one of them names sounds of different lip shapes: ``y`` is the
   rounded /y/ in French, German and Dutch but the unrounded /ɨ/ in Polish (``my``, ``ty``, ``był``). So
   ``GroundTruthConfig.language_phonemes`` overrides the table per language (Polish ``y`` -> ``I``, the close
   unrounded class), and Danish ``0`` (with or without stød: ``?0``) is the rounded /ɔ/ where English ``0`` is
   the open /ɑ/ or /ɒ/ (Danish -> ``O``). The overrides come from an audit of every mnemonic of the corpus languages against
   espeak-ng's own IPA for it (``espeak_TextToPhonemes`` in IPA mode: bench/audit_groundtruth_ipa.py,
   reports/bench/groundtruth_ipa_audit.md and groundtruth_ipa_audit_extra_languages.md): Polish ``y`` and Danish
   ``0`` are the ones whose lip rounding disagreed with their viseme. Corpora store each phoneme's viseme, so the
   curves are recomputed from those (after a speed change, too) without needing the language again.
2. Each viseme has a target vector on the speech channels of ARKit-52 (jaw, lips, cheekPuff on p/b, tongueOut on
   dental fricatives); every other channel stays 0. Silence is the neutral face (all zeros).
3. Coarticulation is Cohen–Massaro dominance blending. Segment ``i`` with interval [s_i, e_i), centre
   c_i = (s_i + e_i) / 2 and duration d_i has target T_i and dominance

       D_i(t) = alpha_i * exp(-theta_i * max(0, |t - c_i| - p_i * d_i / 2) ** c)

   where alpha_i (peak dominance), theta_i (1/s, decay rate) and p_i (plateau: the fraction of the segment
   over which D_i stays at its peak) depend on the viseme, and c = ``GroundTruthConfig.exponent``. The curve is

       curve(t) = sum_i D_i(t) T_i / sum_i D_i(t),   clipped to [0, 1].

   The plateau is our one addition to the original model: without it a long pause, whose centre is far from
   its edges, would lose to a neighbouring vowel and the face would not relax in silence. Bilabials (p, b, m)
   get a high, narrow dominance (alpha 12, theta 90/s, no plateau) so the lips close at every one of them;
   open vowels get alpha 2 with a half-segment plateau so the jaw opens even between two bilabials.

Curves are evaluated at ``frame_times(num_frames(n_samples, fps), fps)`` (the frame anchors of
teacher.constants), so row k of the result is the face at anchor k.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from teacher.constants import ARKIT_52, SAMPLE_RATE, SUPPORTED_FPS, frame_times, num_frames
from teacher.errors import FacedistillError

log = logging.getLogger(__name__)

NEUTRAL = "neutral"
SILENCE_VISEME = "sil"
BILABIAL_VISEME = "PP"
OPEN_VOWEL_VISEME = "aa"

# espeak-ng mnemonics (stress and length marks stripped) of the corpus languages -> viseme.
PHONEME_TO_VISEME: dict[str, str] = {
    "_": "sil",
    # bilabials
    "p": "PP", "b": "PP", "m": "PP", "m-": "PP", "pF": "PP",
    # labiodentals and the Spanish bilabial approximant
    "f": "FF", "v": "FF", "v#": "FF", "B": "FF", "F": "FF",
    # dental fricatives
    "T": "TH", "D": "TH",
    # alveolar stops
    "t": "DD", "d": "DD", "t#": "DD", "t2": "DD", "d#": "DD", "4": "RR",
    # nasals and laterals
    "n": "nn", "n-": "nn", "n^": "nn", "J": "nn", "J^": "nn", "l": "nn", "l-": "nn", "l^": "nn", "L": "nn",
    "@L": "nn", "l/": "nn", "l#": "nn", "N": "kk",
    # sibilants and affricates
    "s": "SS", "z": "SS", "ss": "SS", "z2": "SS", "s#": "SS", "z#": "SS", "ts": "SS", "ts2": "SS", "dz": "SS",
    "S": "CH", "Z": "CH", "tS": "CH", "dZ": "CH", "S;": "CH", "Z;": "CH", "ts;": "CH", "dz;": "CH",
    "C": "CH", "s;": "CH", "z;": "CH", "tS;": "CH", "dZ;": "CH",
    # velars, palatal stops, h
    "k": "kk", "g": "kk", "x": "kk", "h": "kk", "c": "kk", "J#": "kk", "X": "kk", "G": "kk", "k#": "kk",
    # rhotics (taps, trills, uvular)
    "r": "RR", "r-": "RR", "R": "RR", "R2": "RR", "R^": "RR", "*": "RR", "**": "RR", "r/": "RR", "3": "RR",
    # glides and transitions
    "j": "I", ";": "I", "w": "U", "?": NEUTRAL, "!": NEUTRAL, "Q": NEUTRAL,
    # open vowels
    "a": "aa", "a#": "aa", "aa": "aa", "A": "aa", "A~": "aa", "&": "aa", "&~": "aa", "V": "aa", "0": "aa",
    "A@": "aa", "aI": "aa", "aU": "aa", "aI@": "aa", "aI3": "aa", "aU@": "aa", "a2": "aa", "a~": "aa",
    # mid / central vowels
    "e": "E", "E": "E", "E#": "E", "E~": "E", "E2": "E", "eI": "E", "eU": "E", "e@": "E", "@": "E", "@-": "E",
    "@2": "E", "@5": "E", "3:": "E", "EI": "E", "e~": "E", "&:": "E",
    # close front vowels
    "i": "I", "I": "I", "I#": "I", "I2": "I", "i@": "I", "i@3": "I", "i#": "I", "iU": "I",
    # rounded mid vowels
    "o": "O", "O": "O", "O2": "O", "O@": "O", "O~": "O", "OI": "O", "OY": "O", "oI": "O", "oU": "O", "o@": "O",
    "o~": "O", "8": "O", "Y": "O", "W": "O", "Wy": "O", "W~": "O", "VU": "O", "@U": "O", "Au": "O", "oU#": "O",
    # rounded close vowels
    "u": "U", "U": "U", "U@": "U", "UR": "U", "y": "U", "y-": "U", "u#": "U", "U~": "U", "y~": "U",
    # symbols only the extra pseudo-labeling languages produce (teacher.text: da, el, la, mk, ru, uk): palatalised
    # and dental stops, Russian /ja/ (jaw opens to /a/) and /ju/ (lips round), Macedonian /c/, Latin's written h,
    # Danish vocalised r and its centralised /ae/
    "t;": "DD", "d;": "DD", "t[": "DD", "d[": "DD", "m;": "PP", "ja": "aa", "ju": "U", "k^": "kk", "<h>": "kk",
    "3-": "E", "&#": "aa",
}  # fmt: skip
# Danish stød: espeak-ng writes it as "?" before the vowel that carries it (``'?E``); the lips follow the vowel.
STOD = "?"
STRESS_MARKS = "',%="
MODIFIERS = "#23~^-;/"
# First-character classes for symbols not in the table (after modifiers are dropped).
FIRST_CHAR_CLASS = {
    **dict.fromkeys("aA&V0", "aa"), **dict.fromkeys("eE@3", "E"), **dict.fromkeys("iI", "I"),
    **dict.fromkeys("oO8YW", "O"), **dict.fromkeys("uUy", "U"), **dict.fromkeys("pbm", "PP"),
    **dict.fromkeys("fvB", "FF"), **dict.fromkeys("TD", "TH"), **dict.fromkeys("td", "DD"),
    **dict.fromkeys("nlJL", "nn"), **dict.fromkeys("sz", "SS"), **dict.fromkeys("SZC", "CH"),
    **dict.fromkeys("kgxhcNXG", "kk"), **dict.fromkeys("rR*4", "RR"), "j": "I", "w": "U", "_": "sil",
}  # fmt: skip

# Viseme -> (targets on speech channels, dominance alpha, theta [1/s], plateau fraction).
VISEME_TARGETS: dict[str, dict[str, float]] = {
    "sil": {},
    NEUTRAL: {"jawOpen": 0.1},
    "PP": {
        "mouthClose": 0.9, "jawOpen": 0.04, "mouthPressLeft": 0.35, "mouthPressRight": 0.35,
        "mouthRollLower": 0.2, "mouthRollUpper": 0.15,
    },
    "FF": {
        "jawOpen": 0.08, "mouthRollLower": 0.55, "mouthUpperUpLeft": 0.25, "mouthUpperUpRight": 0.25,
        "mouthShrugUpper": 0.2,
    },
    "TH": {"jawOpen": 0.15, "tongueOut": 0.35, "mouthLowerDownLeft": 0.1, "mouthLowerDownRight": 0.1},
    "DD": {"jawOpen": 0.16, "mouthStretchLeft": 0.15, "mouthStretchRight": 0.15},
    "kk": {"jawOpen": 0.22, "mouthStretchLeft": 0.1, "mouthStretchRight": 0.1},
    "CH": {
        "jawOpen": 0.1, "mouthFunnel": 0.45, "mouthPucker": 0.25, "mouthShrugUpper": 0.25,
        "mouthShrugLower": 0.15, "mouthUpperUpLeft": 0.15, "mouthUpperUpRight": 0.15,
    },
    "SS": {
        "jawOpen": 0.06, "mouthStretchLeft": 0.3, "mouthStretchRight": 0.3, "mouthSmileLeft": 0.15,
        "mouthSmileRight": 0.15, "mouthLowerDownLeft": 0.15, "mouthLowerDownRight": 0.15,
    },
    "nn": {"jawOpen": 0.14, "mouthStretchLeft": 0.1, "mouthStretchRight": 0.1},
    "RR": {"jawOpen": 0.15, "mouthPucker": 0.3, "mouthFunnel": 0.2},
    "aa": {"jawOpen": 0.62, "mouthLowerDownLeft": 0.3, "mouthLowerDownRight": 0.3, "mouthStretchLeft": 0.1,
           "mouthStretchRight": 0.1},
    "E": {
        "jawOpen": 0.35, "mouthStretchLeft": 0.3, "mouthStretchRight": 0.3, "mouthSmileLeft": 0.15,
        "mouthSmileRight": 0.15, "mouthLowerDownLeft": 0.15, "mouthLowerDownRight": 0.15,
    },
    "I": {
        "jawOpen": 0.18, "mouthSmileLeft": 0.45, "mouthSmileRight": 0.45, "mouthStretchLeft": 0.3,
        "mouthStretchRight": 0.3,
    },
    "O": {"jawOpen": 0.4, "mouthFunnel": 0.55, "mouthPucker": 0.3},
    "U": {"jawOpen": 0.14, "mouthPucker": 0.75, "mouthFunnel": 0.35},
}  # fmt: skip
# Extra targets for one phoneme on top of its viseme (air pressure before a bilabial plosive's release).
PHONEME_EXTRAS: dict[str, dict[str, float]] = {"p": {"cheekPuff": 0.15}, "b": {"cheekPuff": 0.1}}
VISEMES = tuple(VISEME_TARGETS)

_unknown: Counter[str] = Counter()


@dataclass(frozen=True)
class Dominance:
    alpha: float  # peak dominance
    theta: float  # decay rate, 1/s
    plateau: float  # fraction of the segment held at peak dominance


def _default_dominance() -> dict[str, Dominance]:
    vowel = Dominance(2.0, 22.0, 0.5)
    consonant = Dominance(1.0, 35.0, 0.0)
    return {
        "sil": Dominance(1.5, 20.0, 1.0),
        NEUTRAL: Dominance(0.2, 30.0, 0.0),
        "PP": Dominance(12.0, 90.0, 0.0),
        "FF": Dominance(4.0, 70.0, 0.0),
        "TH": Dominance(2.0, 50.0, 0.0),
        "DD": consonant,
        "kk": Dominance(0.6, 35.0, 0.0),
        "CH": Dominance(2.5, 45.0, 0.0),
        "SS": Dominance(1.5, 45.0, 0.0),
        "nn": consonant,
        "RR": consonant,
        "aa": vowel,
        "E": vowel,
        "I": vowel,
        "O": Dominance(2.5, 20.0, 0.5),
        "U": Dominance(2.5, 20.0, 0.5),
    }


@dataclass(frozen=True)
class GroundTruthConfig:
    """How visemes blend into curves; stored in corpus manifests so the truth can be regenerated exactly."""

    # 3: Danish 0 = /ɔ/ is rounded (-> O); 2: language_phonemes (Polish y = /ɨ/ is unrounded); 1 had no
    # per-language overrides. A saved config keeps its own table, so an older corpus regenerates its own truth.
    version: int = 3
    exponent: float = 1.0  # c in D_i(t) = alpha * exp(-theta * dist ** c)
    dominance: dict[str, Dominance] = field(default_factory=_default_dominance)
    # language -> {mnemonic: viseme} taking precedence over PHONEME_TO_VISEME for that language ("pl" also
    # matches "pl-xx"); a config saved without it (version 1) reads as no overrides
    language_phonemes: dict[str, dict[str, str]] = field(
        default_factory=lambda: {"pl": {"y": "I"}, "da": {"0": "O"}}
    )

    def __post_init__(self) -> None:
        if self.exponent <= 0:
            msg = f"GroundTruthConfig: exponent must be > 0, got {self.exponent}"
            raise FacedistillError(msg)
        missing = set(VISEME_TARGETS) - set(self.dominance)
        if missing:
            msg = f"GroundTruthConfig: no dominance for visemes {sorted(missing)}"
            raise FacedistillError(msg)
        for name, d in self.dominance.items():
            if d.alpha <= 0 or d.theta <= 0 or not 0 <= d.plateau <= 1:
                msg = (
                    f"GroundTruthConfig: dominance of {name!r} needs alpha > 0, theta > 0, 0 <= plateau <= 1"
                )
                raise FacedistillError(msg)
        bad = {v for table in self.language_phonemes.values() for v in table.values()} - set(VISEME_TARGETS)
        if bad:
            msg = f"GroundTruthConfig: language_phonemes name unknown visemes {sorted(bad)}"
            raise FacedistillError(msg)

    def viseme(self, phoneme: str, language: str | None = None) -> str:
        """Viseme of an espeak-ng mnemonic spoken in ``language`` (its overrides first, then ``viseme_of``)."""
        if language:
            table = self.language_phonemes.get(language) or self.language_phonemes.get(language.split("-")[0])
            if table:
                stripped = phoneme.lstrip(STRESS_MARKS)
                for candidate in (stripped, base_symbol(phoneme)):
                    if candidate in table:
                        return table[candidate]
        return viseme_of(phoneme)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GroundTruthConfig:
        dom = {k: Dominance(**v) for k, v in data.get("dominance", {}).items()} or _default_dominance()
        return cls(
            version=data.get("version", 1),
            exponent=data.get("exponent", 1.0),
            dominance=dom,
            language_phonemes={k: dict(v) for k, v in data.get("language_phonemes", {}).items()},
        )


def base_symbol(phoneme: str) -> str:
    """The mnemonic without stress marks, Danish stød and the length mark."""
    return _drop_stod(phoneme.lstrip(STRESS_MARKS)).replace(":", "") or phoneme


def _drop_stod(symbol: str) -> str:
    return symbol[len(STOD) :] if symbol.startswith(STOD) and len(symbol) > len(STOD) else symbol


def viseme_of(phoneme: str) -> str:
    """Viseme class of an espeak-ng mnemonic (unknown symbols are counted, logged once and made ``neutral``)."""
    if phoneme.startswith("_"):
        return SILENCE_VISEME
    stripped = _drop_stod(phoneme.lstrip(STRESS_MARKS))
    for candidate in (stripped, base_symbol(phoneme), base_symbol(phoneme).rstrip(MODIFIERS)):
        if candidate in PHONEME_TO_VISEME:
            return PHONEME_TO_VISEME[candidate]
    first = base_symbol(phoneme)[:1]
    if first in FIRST_CHAR_CLASS:
        return FIRST_CHAR_CLASS[first]
    if phoneme not in _unknown:
        log.warning("unknown espeak-ng phoneme %r mapped to the neutral viseme", phoneme)
    _unknown[phoneme] += 1
    return NEUTRAL


def in_table(phoneme: str) -> bool:
    """Whether the explicit table (not a fallback) knows this mnemonic."""
    stripped = _drop_stod(phoneme.lstrip(STRESS_MARKS))
    return (
        phoneme.startswith("_") or stripped in PHONEME_TO_VISEME or base_symbol(phoneme) in PHONEME_TO_VISEME
    )


def unknown_symbols() -> dict[str, int]:
    """Symbols seen in this process that had no viseme class, with their counts."""
    return dict(_unknown)


def _target_matrix() -> dict[str, np.ndarray]:
    index = {name: i for i, name in enumerate(ARKIT_52)}
    out = {}
    for name, targets in VISEME_TARGETS.items():
        vec = np.zeros(len(ARKIT_52), dtype=np.float64)
        for channel, value in targets.items():
            vec[index[channel]] = value
        out[name] = vec
    return out


_TARGETS = _target_matrix()
_EXTRAS = {
    p: np.array([extras.get(name, 0.0) for name in ARKIT_52], dtype=np.float64)
    for p, extras in PHONEME_EXTRAS.items()
}


def _segment_visemes(phonemes: list) -> list[str]:
    return [
        p.viseme if getattr(p, "viseme", None) in VISEME_TARGETS else viseme_of(p.phoneme) for p in phonemes
    ]


def dominance_weights(
    phonemes: list, times: np.ndarray, *, config: GroundTruthConfig = GroundTruthConfig()
) -> np.ndarray:
    """The coarticulation weights D_i(t) / sum_j D_j(t), float64 [len(times), len(phonemes)] (rows sum to 1).

    ``phonemes`` as in :func:`curves_at_times`; curves are these weights times the segments' targets, clipped."""
    times = np.asarray(times, dtype=np.float64)
    starts = np.array([p.start for p in phonemes], dtype=np.float64) / SAMPLE_RATE
    ends = np.array([p.end for p in phonemes], dtype=np.float64) / SAMPLE_RATE
    doms = [config.dominance[v] for v in _segment_visemes(phonemes)]
    alpha = np.array([d.alpha for d in doms])
    theta = np.array([d.theta for d in doms])
    plateau = np.array([d.plateau for d in doms]) * (ends - starts) / 2
    centre = (starts + ends) / 2
    dist = np.maximum(0.0, np.abs(times[:, None] - centre[None, :]) - plateau[None, :])
    log_d = np.log(alpha)[None, :] - theta[None, :] * dist**config.exponent
    log_d -= log_d.max(axis=1, keepdims=True)  # stable: only ratios of dominances matter
    weight = np.exp(log_d)
    return weight / weight.sum(axis=1, keepdims=True)


def segment_targets(phonemes: list) -> np.ndarray:
    """Each segment's target vector float64 [len(phonemes), 52]: its viseme's, plus the phoneme's extras."""
    visemes = _segment_visemes(phonemes)
    return np.stack(
        [_TARGETS[v] + _EXTRAS.get(base_symbol(p.phoneme), 0.0) for v, p in zip(visemes, phonemes)]
    )


def curves_at_times(
    phonemes: list, times: np.ndarray, *, config: GroundTruthConfig = GroundTruthConfig()
) -> np.ndarray:
    """Blended ARKit-52 curves (float32 [len(times), 52]) at arbitrary times in seconds.

    ``phonemes`` are objects with ``start``, ``end`` (16 kHz samples) and ``phoneme``; when they carry a
    ``viseme`` of the table (a corpus's phonemes do: assigned with the utterance's language) that class is used,
    else ``viseme_of(phoneme)``.
    """
    times = np.asarray(times, dtype=np.float64)
    if not phonemes:
        return np.zeros((len(times), len(ARKIT_52)), dtype=np.float32)
    targets = segment_targets(phonemes)  # [N, 52]
    out = np.empty((len(times), len(ARKIT_52)), dtype=np.float32)
    chunk = 512  # frames per block keeps the [frames, segments] matrix small for long files
    for lo in range(0, len(times), chunk):
        weight = dominance_weights(phonemes, times[lo : lo + chunk], config=config)
        out[lo : lo + chunk] = np.clip(weight @ targets, 0.0, 1.0)
    return out


def curves_from_phonemes(
    phonemes: list, n_samples: int, *, fps: int, config: GroundTruthConfig = GroundTruthConfig()
) -> np.ndarray:
    """Ground-truth curves float32 [num_frames(n_samples, fps), 52], row k at frame anchor k."""
    if fps not in SUPPORTED_FPS:
        msg = f"fps {fps} not supported (choose one of {SUPPORTED_FPS})"
        raise FacedistillError(msg)
    return curves_at_times(phonemes, frame_times(num_frames(n_samples, fps), fps), config=config)
