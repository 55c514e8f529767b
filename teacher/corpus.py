"""The embedded speech corpus: espeak-ng speech in several languages with exact ground-truth ARKit curves.

``build_corpus(out_dir, config=CorpusConfig())`` writes three datasets (teacher.dataset format)::

    out_dir/corpus_config.json     the config this folder was built with (a rebuild must match it)
    out_dir/corpus.json            card: config, summary, per-split manifest sha256
    out_dir/labeled/               few voices, 2 languages, clean; labels = truth = ground truth
    out_dir/unlabeled/             many voices, all training languages, varied rate/pitch, augmented;
                                   labels absent (the teacher pseudo-labels it), truth kept for evaluation
    out_dir/test/                  voices and languages seen in neither other split; truth only

Every utterance (text, voice, rate, pitch, range, augmentation) is drawn up front from the seed, so shard ``i``
of a split always holds the same utterances and a rebuild with the same config gives byte-identical shards.
Splits are sized in minutes by an estimate of each utterance's duration (words / rate); the measured duration
is what the manifests and the summary report. A shard file that exists is complete (written atomically) and is
not rewritten, so an interrupted build resumes; manifests are written once all shards of a split exist.
Each shard is synthesised in a fresh worker process (see ``build_corpus``), which makes shards byte-identical
across builds whatever the worker count or the order in which shards finish.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from teacher.augment import AugmentConfig, apply_augment, describe, draw_augment
from teacher.constants import ARKIT_52, SAMPLE_RATE, SUPPORTED_FPS
from teacher.dataset import Phoneme, Utterance, read_shard, shard_name, write_manifest, write_shard
from teacher.errors import FacedistillError
from teacher.fsutil import atomic_write_json, sha256_file
from teacher.groundtruth import GroundTruthConfig, curves_from_phonemes
from teacher.text import WORD_LOCALES, sentence
from teacher.tts import LANGUAGES, RANDOM_VARIANTS, VARIANTS, synthesize
from teacher.voices import PREFIX as RANDOM_VOICE_PREFIX

SPLITS = ("labeled", "unlabeled", "test")
SOURCE = "espeak-ng"
CONFIG_FILE = "corpus_config.json"
CARD_FILE = "corpus.json"
SECONDS_PER_WORD_AT_1_WPM = 60.0 * 1.1  # fitted on 450 planned utterances: 0.98 (en/de) .. 1.2 (it/pl)
PAUSE_ESTIMATE_S = 0.1  # leading/trailing silence of one utterance (same fit: 0.04 .. 0.13 s)


class CorpusError(FacedistillError, ValueError):
    """A corpus config or corpus folder that cannot be used."""


@dataclass(frozen=True)
class SplitConfig:
    """Who speaks in one split and how."""

    minutes: float
    languages: tuple[str, ...]
    variants: tuple[str, ...]  # "" = the language's default voice; else an espeak-ng variant such as "f3"
    rate: tuple[int, int] = (150, 190)  # words per minute
    pitch: tuple[int, int] = (40, 60)
    pitch_range: tuple[int, int] = (40, 60)
    augment_fraction: float = 0.0

    def voices(self) -> list[str]:
        return [lang if not v else f"{lang}+{v}" for lang in self.languages for v in self.variants]


def _labeled() -> SplitConfig:
    # five languages in the same 10 minutes (was en-us, de): test MSE 0.361x -> 0.307x the mean predictor, lip closure
    # 0.79 -> 0.83, the test split unchanged (reports/bench/teacher_labeled_languages.txt)
    return SplitConfig(minutes=10.0, languages=("en-us", "de", "es", "nl", "cs"), variants=("", "f1", "m3"))


def _unlabeled() -> SplitConfig:
    return SplitConfig(
        minutes=130.0,  # was 65; bench_distill tiny pseudo-only: 0.675x (65 min) -> 0.667x mean MSE
        languages=("en-us", "en-gb-x-rp", "de", "fr", "es", "nl", "cs"),
        variants=(
            "m1", "m2", "m4", "m5", "m6", "klatt", "klatt2", "klatt3", "croak", "Alex", "Andy", "Denis", "Gene",
            "Lee", "Mario", "Michael", "Tweaky", "aunty", "boris", "david", "ed", "iven", "john", "linda", "max",
            "paul", "quincy", "rob", "robert", "steph", "travis", "zac",
        ),
        rate=(120, 240),
        pitch=(20, 80),
        pitch_range=(20, 90),
        augment_fraction=0.7,
    )  # fmt: skip


def _test() -> SplitConfig:
    return SplitConfig(
        minutes=8.0,
        languages=("it", "pl", "en-us", "fr"),
        variants=("f4", "m7", "klatt4", "Annie", "norbert"),
        rate=(130, 220),
        pitch=(30, 70),
        pitch_range=(30, 70),
        augment_fraction=0.3,
    )


@dataclass(frozen=True)
class CorpusConfig:
    """Everything that determines the corpus; stored beside it, so a build can be replayed exactly."""

    version: int = 1
    seed: int = 0
    fps: int = 30
    utterances_per_shard: int = 40
    workers: int = 2  # processes synthesising shards in parallel
    labeled: SplitConfig = field(default_factory=_labeled)
    unlabeled: SplitConfig = field(default_factory=_unlabeled)
    test: SplitConfig = field(default_factory=_test)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    groundtruth: GroundTruthConfig = field(default_factory=GroundTruthConfig)

    def __post_init__(self) -> None:
        if self.fps not in SUPPORTED_FPS:
            msg = f"CorpusConfig: fps {self.fps} not supported (choose one of {SUPPORTED_FPS})"
            raise CorpusError(msg)
        if self.utterances_per_shard < 1 or self.workers < 1:
            msg = "CorpusConfig: utterances_per_shard and workers must be >= 1"
            raise CorpusError(msg)
        for name in SPLITS:
            split = getattr(self, name)
            if split.minutes <= 0 or not split.languages or not split.variants:
                msg = f"CorpusConfig: split {name} needs minutes > 0, languages and variants"
                raise CorpusError(msg)
            for lang in split.languages:
                if lang not in LANGUAGES or lang not in WORD_LOCALES:
                    msg = f"CorpusConfig: split {name} language {lang!r} unsupported (known: {', '.join(LANGUAGES)})"
                    raise CorpusError(msg)
            bad = [
                v
                for v in split.variants
                if v and (v not in VARIANTS or v in RANDOM_VARIANTS) and not v.startswith(RANDOM_VOICE_PREFIX)
            ]
            if bad:
                msg = f"CorpusConfig: split {name} has unknown or non-reproducible voice variants {bad}"
                raise CorpusError(msg)
            if not (0.0 <= split.augment_fraction <= 1.0):
                msg = f"CorpusConfig: split {name} augment_fraction must lie in [0, 1]"
                raise CorpusError(msg)
        voices = {name: set(getattr(self, name).voices()) for name in SPLITS}
        for a, b in (("labeled", "unlabeled"), ("labeled", "test"), ("unlabeled", "test")):
            if voices[a] & voices[b]:
                msg = f"CorpusConfig: splits {a} and {b} share voices {sorted(voices[a] & voices[b])[:3]}"
                raise CorpusError(msg)
        if not set(self.test.languages) - set(self.labeled.languages) - set(self.unlabeled.languages):
            msg = "CorpusConfig: the test split needs at least one language unseen in labeled and unlabeled"
            raise CorpusError(msg)

    @classmethod
    def quick(cls, **overrides: Any) -> CorpusConfig:
        """A few-second build for tests and smoke runs (about 2 minutes of audio in all)."""
        base = cls()
        sizes = {
            "labeled": replace(base.labeled, minutes=0.5),
            "unlabeled": replace(base.unlabeled, minutes=1.0),
            "test": replace(base.test, minutes=0.5),
        }
        return replace(base, **{"utterances_per_shard": 8, "workers": 1, **sizes, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CorpusConfig:
        data = dict(data)
        for name in SPLITS:
            if name in data:
                data[name] = SplitConfig(
                    **{k: tuple(v) if isinstance(v, list) else v for k, v in data[name].items()}
                )
        if "augment" in data:
            data["augment"] = AugmentConfig.from_dict(data["augment"])
        if "groundtruth" in data:
            data["groundtruth"] = GroundTruthConfig.from_dict(data["groundtruth"])
        return cls(**data)


def plan_split(config: CorpusConfig, split: str) -> list[dict[str, Any]]:
    """Every utterance of a split, drawn from the seed before anything is synthesised."""
    sc: SplitConfig = getattr(config, split)
    rng = np.random.default_rng([config.seed, SPLITS.index(split)])
    plan: list[dict[str, Any]] = []
    budget, estimated = sc.minutes * 60.0, 0.0
    while estimated < budget:
        language = sc.languages[
            len(plan) % len(sc.languages)
        ]  # round robin: even tiny splits hold every language
        variant = sc.variants[int(rng.integers(0, len(sc.variants)))]
        voice = f"{language}+{variant}" if variant else language
        text = sentence(language, rng)
        rate = int(rng.integers(sc.rate[0], sc.rate[1] + 1))
        pitch = int(rng.integers(sc.pitch[0], sc.pitch[1] + 1))
        pitch_range = int(rng.integers(sc.pitch_range[0], sc.pitch_range[1] + 1))
        augment = draw_augment(rng, config.augment) if rng.random() < sc.augment_fraction else {}
        n_words = len(text.split())
        estimated += SECONDS_PER_WORD_AT_1_WPM * n_words / rate / augment.get("speed", 1.0) + PAUSE_ESTIMATE_S
        plan.append(
            {
                "id": f"{split}-{len(plan):06d}",
                "split": split,
                "voice": voice,
                "language": language,
                "text": text,
                "rate": rate,
                "pitch": pitch,
                "range": pitch_range,
                "augment": augment,
            }
        )
    return plan


def synthesize_utterance(item: dict[str, Any], *, fps: int, groundtruth: GroundTruthConfig) -> Utterance:
    """One planned utterance: speech, augmentation, phoneme intervals with visemes and ground-truth curves."""
    audio, speech = synthesize(
        item["text"], voice=item["voice"], rate=item["rate"], pitch=item["pitch"], range=item["range"]
    )
    audio, speech = apply_augment(audio, speech, item["augment"])
    phonemes = [
        Phoneme(p.start, p.end, p.phoneme, groundtruth.viseme(p.phoneme, item["language"])) for p in speech
    ]
    truth = curves_from_phonemes(phonemes, len(audio), fps=fps, config=groundtruth)
    meta = {k: v for k, v in item.items() if k != "id"}
    meta["source"] = SOURCE
    meta["augment_description"] = describe(item["augment"])
    return Utterance(
        id=item["id"],
        audio=audio,
        labels=truth if item["split"] == "labeled" else None,
        truth=truth,
        phonemes=phonemes,
        meta=meta,
    )


def _build_shard(job: tuple[str, list[dict[str, Any]], int, dict[str, Any]]) -> dict:
    path, items, fps, gt = job
    groundtruth = GroundTruthConfig.from_dict(gt)
    utts = [synthesize_utterance(item, fps=fps, groundtruth=groundtruth) for item in items]
    return write_shard(path, utts, fps=fps, n_channels=len(ARKIT_52))


def _existing_entry(path: Path) -> dict:
    utts = read_shard(path)
    return {
        "file": path.name,
        "sha256": sha256_file(path),
        "utterances": len(utts),
        "frames": sum(len(u.truth) for u in utts if u.truth is not None),
        "seconds": sum(len(u.audio) for u in utts) / SAMPLE_RATE,
    }


def _check_folder_config(out_dir: Path, config: CorpusConfig) -> None:
    path = out_dir / CONFIG_FILE
    wanted = json.loads(json.dumps(config.to_dict()))
    if path.is_file():
        try:
            found = json.loads(path.read_text())
        except json.JSONDecodeError:
            found = None
        if found != wanted:
            msg = f"{path}: this folder was built with another corpus config; use a new --out or delete the folder"
            raise CorpusError(msg)
    else:
        atomic_write_json(path, wanted)


def build_corpus(out_dir: str | os.PathLike, *, config: CorpusConfig = CorpusConfig()) -> dict[str, Any]:
    """Synthesise (or finish) the three splits under ``out_dir``; returns the summary also stored in corpus.json."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_folder_config(out_dir, config)
    plans = {split: plan_split(config, split) for split in SPLITS}
    jobs, existing = [], {}
    for split, plan in plans.items():
        shards = [
            plan[i : i + config.utterances_per_shard]
            for i in range(0, len(plan), config.utterances_per_shard)
        ]
        for index, items in enumerate(shards):
            path = out_dir / split / "shards" / shard_name(index)
            if path.is_file():
                existing[(split, index)] = path
            else:
                jobs.append(((split, index), (str(path), items, config.fps, config.groundtruth.to_dict())))
    entries: dict[str, list[dict]] = {split: [] for split in SPLITS}
    for (split, _), path in existing.items():
        entries[split].append(_existing_entry(path))
    start = time.perf_counter()
    built_seconds = 0.0
    bar = tqdm(total=len(jobs), desc="corpus shards", unit="shard", disable=not jobs)
    if jobs:
        # One fresh process per shard: espeak-ng carries wave-generator state from one utterance to the next
        # (a few samples of timing), so a shard is reproducible only when synthesised from a pristine library.
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        with ctx.Pool(min(config.workers, len(jobs)), maxtasksperchild=1) as pool:
            for (key, _), entry in zip(jobs, pool.imap(_build_shard, [job for _, job in jobs])):
                entries[key[0]].append(entry)
                built_seconds += entry["seconds"]
                bar.update(1)
    bar.close()
    wall = time.perf_counter() - start
    summary: dict[str, Any] = {"out_dir": str(out_dir), "splits": {}}
    manifests = {}
    for split in SPLITS:
        sc: SplitConfig = getattr(config, split)
        plan = plans[split]
        info = {
            "corpus_config_version": config.version,
            "seed": config.seed,
            "source": SOURCE,
            "voices": sorted({p["voice"] for p in plan}),
            "languages": sorted({p["language"] for p in plan}),
            "groundtruth": config.groundtruth.to_dict(),
            "augmented_utterances": sum(bool(p["augment"]) for p in plan),
        }
        manifest = write_manifest(
            out_dir / split,
            entries[split],
            name=f"corpus-{split}",
            split=split,
            fps=config.fps,
            channel_names=ARKIT_52,
            has_labels=split == "labeled",
            has_truth=True,
            label_source="groundtruth" if split == "labeled" else "none",
            info=info,
        )
        manifests[split] = sha256_file(out_dir / split / "manifest.json")
        summary["splits"][split] = {
            "utterances": manifest["totals"]["utterances"],
            "hours": manifest["totals"]["seconds"] / 3600.0,
            "minutes": manifest["totals"]["seconds"] / 60.0,
            "planned_minutes": sc.minutes,
            "shards": len(entries[split]),
            "voices": info["voices"],
            "languages": info["languages"],
            "augmented_utterances": info["augmented_utterances"],
        }
    summary["languages"] = sorted({lang for s in summary["splits"].values() for lang in s["languages"]})
    summary["voices"] = sum(len(s["voices"]) for s in summary["splits"].values())
    summary["built_shards"] = len(jobs)
    summary["reused_shards"] = len(existing)
    summary["build_seconds"] = wall
    summary["built_audio_seconds"] = built_seconds
    summary["throughput_audio_s_per_s"] = built_seconds / wall if wall > 0 and built_seconds else None
    atomic_write_json(
        out_dir / CARD_FILE, {"config": config.to_dict(), "manifest_sha256": manifests, "summary": summary}
    )
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable lines for the CLI."""
    lines = [f"corpus in {summary['out_dir']}"]
    for split, s in summary["splits"].items():
        lines.append(
            f"  {split:<9} {s['minutes']:7.1f} min ({s['hours']:.3f} h) {s['utterances']:5d} utterances "
            f"{s['shards']:4d} shards  {len(s['voices']):3d} voices  languages {', '.join(s['languages'])}"
        )
    lines.append(f"  {len(summary['languages'])} languages, {summary['voices']} voices in all")
    tp = summary["throughput_audio_s_per_s"]
    rate = f"{tp:.0f} s of audio per s" if tp else "nothing to build"
    lines.append(
        f"  built {summary['built_shards']} shards, reused {summary['reused_shards']} in "
        f"{summary['build_seconds']:.1f} s ({rate})"
    )
    return "\n".join(lines)
