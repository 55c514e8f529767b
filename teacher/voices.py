"""Random espeak-ng voices: new speakers drawn from a seed, for more voice diversity in unlabeled speech.

espeak-ng's ~40 bundled variants (``<language>+m3``, ``+Annie`` ...) are files of a few keywords that rescale the
formants, pitch, voicing and tone of the same phonemes. :func:`random_variant` draws such a file: formants 1-8
each get their own frequency (F1 70-135 %, F2 65-140 %, F3 60-140 %, higher ones 80-125 %), strength and
bandwidth; plus a pitch base and range, a voicing level and a three-band tone curve. No breath or flutter
keywords, whose noise no seed controls, so the same file synthesises the same audio.

:func:`write_overlay` writes an espeak-ng data folder that is the bundled one (every entry a symlink) plus the new
variants under ``voices/!v``; point ``$FACEDISTILL_ESPEAK_DATA`` at it (teacher.tts reads it) and the voices are
``<language>+<name>``. Only training data should use them: a test split keeps its own held-out voices.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from teacher.fsutil import atomic_write_text

PREFIX = "fdv"  # random variant names: fdv<seed>_<index>


def random_variant(rng: np.random.Generator, name: str) -> str:
    """The text of one espeak-ng variant file with formants, pitch, voicing and tone drawn from ``rng``."""
    freq = {1: (70, 135), 2: (65, 140), 3: (60, 140)}
    lines = ["language variant", f"name {name}"]
    base = int(rng.integers(60, 221))
    lines.append(f"pitch {base} {base + int(rng.integers(20, 121))}")
    for k in range(9):
        lo, hi = freq.get(k, (80, 125))
        lines.append(
            f"formant {k} {int(rng.integers(lo, hi + 1))} {int(rng.integers(40, 131))} {int(rng.integers(50, 161))}"
        )
    lines.append(f"voicing {int(rng.integers(40, 251))}")
    bands = [
        (600, int(rng.integers(60, 256))),
        (1200, int(rng.integers(60, 256))),
        (2500, int(rng.integers(60, 256))),
    ]
    lines.append("tone " + " ".join(f"{f} {a}" for f, a in bands))
    return "\n".join(lines) + "\n"


def variant_names(seed: int, count: int) -> list[str]:
    return [f"{PREFIX}{seed}_{i:03d}" for i in range(count)]


def _link_entries(src: Path, dst: Path, *, but: str | None = None) -> None:
    """Symlink every entry of ``src`` into ``dst`` (made if missing), except ``but`` and names ``dst`` has."""
    dst.mkdir(parents=True, exist_ok=True)
    for entry in src.iterdir():
        if entry.name != but and not (dst / entry.name).exists():
            (dst / entry.name).symlink_to(entry.resolve())


def write_overlay(out_dir: str | os.PathLike, *, seed: int, count: int) -> tuple[Path, list[str]]:
    """An espeak-ng data folder at ``out_dir``: the data in use (symlinked; the bundled one unless
    ``$FACEDISTILL_ESPEAK_DATA`` names another) plus ``count`` random variants drawn from ``seed``, as real files in
    ``voices/!v``. Returns the folder and the variant names. Rewriting with the same seed gives the same files."""
    import espeakng_loader

    from teacher.tts import espeak_data_path

    out = Path(out_dir)
    if out.resolve() == Path(espeakng_loader.get_data_path()).resolve():
        msg = f"{out}: is espeak-ng's bundled data folder; choose another folder for the overlay"
        raise ValueError(msg)
    source = espeak_data_path()
    if source.resolve() != out.resolve():  # rewriting the overlay in use only rewrites its variants
        _link_entries(source, out, but="voices")
        _link_entries(source / "voices", out / "voices", but="!v")
        _link_entries(source / "voices" / "!v", out / "voices" / "!v")
    rng = np.random.default_rng([seed, 0x766F6963])
    names = variant_names(seed, count)
    for name in names:
        atomic_write_text(out / "voices" / "!v" / name, random_variant(rng, name))
    return out, names
