"""espeak-ng synthesis: 16 kHz audio whose phoneme intervals line up with the sound, sample-exactly."""

import numpy as np
import pytest

from teacher.constants import SAMPLE_RATE
from teacher.tts import SILENCE, TTSError, available_voices, synthesize, to_16k_sample

TEXT = "Oh so, alles ist elf. Anna sah es."


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


@pytest.mark.parametrize("voice", ["en-us", "it+m7", "fr+klatt", "de"])
def test_intervals_tile_the_audio(voice):
    audio, phonemes = synthesize(TEXT, voice=voice)
    assert audio.dtype == np.float32 and audio.ndim == 1 and np.abs(audio).max() <= 1.0
    assert phonemes[0].start == 0 and phonemes[-1].end == len(audio)
    for a, b in zip(phonemes, phonemes[1:]):
        assert a.end == b.start and a.end > a.start


@pytest.mark.parametrize("voice", ["en-us", "it+m7", "fr+klatt"])
def test_pauses_are_silent_and_speech_restarts_where_the_pause_ends(voice):
    audio, phonemes = synthesize(TEXT, voice=voice)
    pauses = [(k, p) for k, p in enumerate(phonemes) if p.phoneme == SILENCE and 0 < k < len(phonemes) - 1]
    assert len(pauses) == 2  # the comma and the full stop
    loud = np.abs(audio) > 0.01
    for k, p in pauses:
        assert p.end - p.start > 0.1 * SAMPLE_RATE
        assert rms(audio[p.start : p.end]) < 0.003
        mid = (p.start + p.end) // 2
        onset = mid + int(np.argmax(loud[mid:]))
        assert abs(onset - p.end) <= 48, f"speech restarts {onset - p.end} samples from the pause end"
        # the vowel after the pause carries energy from its first milliseconds
        nxt = phonemes[k + 1]
        assert rms(audio[nxt.start : nxt.start + 160]) > 0.01


def test_vowels_have_energy():
    audio, phonemes = synthesize("Papa and mama are at the bar.", voice="en-us")
    vowels = [p for p in phonemes if p.phoneme.lstrip("',")[:1] in "aAV@3eEiIoOuU0"]
    assert len(vowels) >= 6
    for p in vowels:
        assert rms(audio[p.start : p.end]) > 0.02, p


def test_rate_and_voice_change_the_audio():
    slow, _ = synthesize("Bring me a bottle of milk.", voice="en-us", rate=120)
    fast, _ = synthesize("Bring me a bottle of milk.", voice="en-us", rate=260)
    other, _ = synthesize("Bring me a bottle of milk.", voice="en-us+f3", rate=120)
    assert len(slow) > 1.6 * len(fast)
    assert len(other) != len(slow) or not np.array_equal(other, slow)


def test_sample_mapping_is_exact():
    assert to_16k_sample(22050) == 16000
    assert to_16k_sample(11025) == 8000
    assert to_16k_sample(1) == 1  # 0.7256 rounds to 1


def test_bad_voice_and_parameters_are_refused():
    with pytest.raises(TTSError, match="voice"):
        synthesize("hello", voice="xx-nope")
    with pytest.raises(TTSError, match="out of bounds"):
        synthesize("hello", rate=10)


def test_voices_of_a_language():
    voices = available_voices("de")
    assert "de" in voices and "de+f3" in voices and len(voices) > 20
