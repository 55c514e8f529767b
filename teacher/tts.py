"""espeak-ng speech with sample-exact phoneme intervals, through ctypes (library and data from ``espeakng_loader``).

espeak-ng reports a phoneme event (type 7) at the exact output sample where each phoneme starts, so the phoneme
timeline of the synthetic audio is known exactly, not estimated by an aligner. ``synthesize`` resamples the
22 050 Hz output to 16 kHz with soxr and maps every boundary ``s`` to ``round(s * 16000 / 22050)``; the
intervals are contiguous from sample 0 to the end of the audio. Pauses are kept as the phoneme ``"_"``.

The library has process-global state: it is initialised once per process (lazily) and calls are serialised by a
lock. The ctypes callback object is kept alive at module level, as the C side holds a raw pointer to it.

Reproducibility: espeak-ng carries wave-generator state from one utterance to the next (neither
``espeak_Terminate`` nor a new ``espeak_Initialize`` resets it), which moves boundaries by a few samples and
changes the waveform slightly. The phoneme intervals always match the audio that was produced; but to get
byte-identical audio, synthesise the same sequence of utterances in a fresh process (teacher.corpus does).
The variants in ``RANDOM_VARIANTS`` add breath noise from a source that neither ``espeak_ng_SetRandSeed`` nor
libc ``srand`` seeds, so they differ even across fresh processes; the corpus does not use them.
"""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from teacher.constants import SAMPLE_RATE
from teacher.errors import FacedistillError

ESPEAK_RATE = 22_050  # Hz, espeak-ng's output rate (checked against espeak_Initialize's return value)
AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_PHONEME_EVENTS = 1
POS_CHARACTER = 1
CHARS_UTF8 = 1
EVENT_LIST_TERMINATED = 0
EVENT_PHONEME = 7
PARAM_RATE, PARAM_PITCH, PARAM_RANGE = 1, 3, 4
SILENCE = "_"

# Languages whose voices and dictionaries were checked to synthesise with the bundled data.
LANGUAGES = (
    "en-us", "en-gb-x-rp", "de", "fr", "es", "it", "pt", "nl", "pl", "sv", "cs", "da", "el", "la", "mk", "ru", "uk",
)  # fmt: skip
# Voice variants (``<language>+<variant>``); each changes formants/pitch/breathiness of the same phonemes.
VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "klatt4", "croak", "whisper", "Alex", "Annie", "Andy", "Denis",
    "Gene", "Lee", "Mario", "Michael", "Tweaky", "aunty", "boris", "david", "ed", "iven", "john",
    "linda", "max", "norbert", "paul", "quincy", "rob", "robert", "steph", "travis", "victor", "zac",
)  # fmt: skip
# Variants whose audio changes from run to run even in a fresh process (breath noise); checked on this build.
RANDOM_VARIANTS = frozenset({"f2", "f3", "f5", "whisper", "victor"})


class TTSError(FacedistillError, RuntimeError):
    """espeak-ng could not be loaded or refused a voice, parameter or text."""


class _Id(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _Id),
    ]


_CALLBACK_TYPE = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclass(frozen=True)
class SpeechPhoneme:
    """One phoneme of synthesised speech: samples [start, end) at 16 kHz and espeak-ng's mnemonic."""

    start: int
    end: int
    phoneme: str


class _Engine:
    """The process-wide espeak-ng instance (one per process; espeak-ng is not re-entrant)."""

    def __init__(self) -> None:
        import espeakng_loader

        try:
            self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        except OSError as exc:
            msg = f"{espeakng_loader.get_library_path()}: cannot load espeak-ng ({exc})"
            raise TTSError(msg) from None
        data_path = espeak_data_path()
        data = str(data_path).encode()
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        rate = self.lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data, INITIALIZE_PHONEME_EVENTS)
        if rate != ESPEAK_RATE:
            msg = f"{data_path}: espeak_Initialize returned {rate}, expected {ESPEAK_RATE} Hz"
            raise TTSError(msg)
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        self._blocks: list[np.ndarray] = []
        self._events: list[tuple[int, str]] = []
        self._callback = _CALLBACK_TYPE(self._on_audio)  # kept alive: the C side holds this pointer
        self.lib.espeak_SetSynthCallback(self._callback)
        self.lock = threading.Lock()

    def _on_audio(self, wav, n: int, events) -> int:
        if n > 0 and wav:
            self._blocks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type == EVENT_PHONEME:
                self._events.append((int(ev.sample), ev.id.string.decode("utf-8", "replace")))
            i += 1
        return 0

    def run(self, text: str, voice: str, rate: int, pitch: int, pitch_range: int) -> tuple[np.ndarray, list]:
        with self.lock:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                msg = f"espeak-ng voice {voice!r}: not available in the bundled espeak-ng data"
                raise TTSError(msg)
            for param, value in ((PARAM_RATE, rate), (PARAM_PITCH, pitch), (PARAM_RANGE, pitch_range)):
                self.lib.espeak_SetParameter(param, int(value), 0)
            self._blocks, self._events = [], []
            buf = text.encode("utf-8") + b"\0"
            err = self.lib.espeak_Synth(buf, len(buf), 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
            self.lib.espeak_Synchronize()
            if err != 0:
                msg = f"espeak-ng voice {voice!r}: espeak_Synth failed with code {err} on {text[:40]!r}"
                raise TTSError(msg)
            audio = np.concatenate(self._blocks) if self._blocks else np.zeros(0, np.int16)
            return audio, list(self._events)


_ENGINE: _Engine | None = None


ESPEAK_DATA_ENV = "FACEDISTILL_ESPEAK_DATA"


def espeak_data_path() -> Path:
    """The espeak-ng data folder: ``$FACEDISTILL_ESPEAK_DATA`` if set (e.g. an overlay with extra voice variants,
    :func:`teacher.voices.write_overlay`), else the one bundled with ``espeakng_loader``."""
    import espeakng_loader

    override = os.environ.get(ESPEAK_DATA_ENV)
    if override:
        path = Path(override)
        if not (path / "phontab").is_file():
            msg = f"{path}: ${ESPEAK_DATA_ENV} is not an espeak-ng data folder (no phontab)"
            raise TTSError(msg)
        return path
    return Path(espeakng_loader.get_data_path())


def _engine() -> _Engine:
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = _Engine()
    return _ENGINE


def _normalise_phoneme(symbol: str) -> str:
    """Pauses (``_``, ``_:``, ``_!`` ...) become ``"_"``; other mnemonics are kept as espeak-ng writes them."""
    symbol = symbol.strip()
    return SILENCE if not symbol or symbol.startswith("_") else symbol


def to_16k_sample(sample_22k: int) -> int:
    """Exact boundary mapping from espeak-ng's 22 050 Hz sample index to 16 kHz: round(s * 16000 / 22050)."""
    return (2 * sample_22k * SAMPLE_RATE + ESPEAK_RATE) // (2 * ESPEAK_RATE)


def synthesize(
    text: str, *, voice: str = "en-us", rate: int = 175, pitch: int = 50, range: int = 50
) -> tuple[np.ndarray, list[SpeechPhoneme]]:
    """Speak ``text``: float32 audio at 16 kHz and contiguous phoneme intervals covering it exactly.

    ``rate`` is words per minute (80..450), ``pitch`` and ``range`` are 0..100 (espeak-ng's parameters).
    """
    if not text.strip():
        msg = "synthesize: empty text"
        raise TTSError(msg)
    if not (80 <= rate <= 450 and 0 <= pitch <= 100 and 0 <= range <= 100):
        msg = f"espeak-ng voice {voice!r}: rate {rate} / pitch {pitch} / range {range} out of bounds"
        raise TTSError(msg)
    pcm, events = _engine().run(text, voice, rate, pitch, range)
    if len(pcm) == 0:
        msg = f"espeak-ng voice {voice!r}: produced no audio for {text[:40]!r}"
        raise TTSError(msg)
    audio22 = pcm.astype(np.float32) / 32768.0
    audio = soxr.resample(audio22, ESPEAK_RATE, SAMPLE_RATE, quality="HQ").astype(np.float32)
    n = len(audio)
    # Boundaries: the start of every phoneme event, plus a leading pause if speech does not start at 0.
    starts: list[tuple[int, str]] = []
    for sample22, symbol in events:
        if symbol.startswith("("):  # a language switch marker such as "(en)", not a phoneme
            continue
        start = min(to_16k_sample(sample22), n)
        name = _normalise_phoneme(symbol)
        if starts and starts[-1][0] == start:  # zero-length: the later event wins
            starts[-1] = (start, name)
        elif starts and starts[-1][1] == SILENCE and name == SILENCE:
            continue  # merge consecutive pauses
        else:
            starts.append((start, name))
    if not starts or starts[0][0] > 0:
        starts.insert(0, (0, SILENCE))
    phonemes = []
    for i, (start, name) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else n
        if end > start:
            phonemes.append(SpeechPhoneme(start, end, name))
    return audio, phonemes


def available_voices(language: str | None = None) -> list[str]:
    """Voice names ``<language>+<variant>`` that espeak-ng accepts (checked by selecting each one)."""
    eng = _engine()
    langs = LANGUAGES if language is None else (language,)
    out = []
    with eng.lock:
        for lang in langs:
            for name in (lang, *(f"{lang}+{v}" for v in VARIANTS)):
                if eng.lib.espeak_SetVoiceByName(name.encode()) == 0:
                    out.append(name)
    return out
