"""`compress corpus build|info|plot`: the embedded espeak-ng corpus with exact ground-truth face curves."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from compress.cliargs import comma_list
from teacher.constants import ARKIT_52, SAMPLE_RATE, frame_times
from teacher.corpus import CARD_FILE, SPLITS, CorpusConfig, build_corpus, format_summary
from teacher.dataset import MANIFEST, Dataset, DatasetError, Utterance

DEFAULT_OUT = "runs/default/corpus"
PLOT_CHANNELS = (
    "jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthSmileLeft", "mouthStretchLeft",
    "mouthRollLower", "mouthPressLeft",
)  # fmt: skip


def register(subparsers: argparse._SubParsersAction) -> None:
    corpus = subparsers.add_parser(
        "corpus",
        help="synthesise / inspect / plot the embedded speech corpus with exact ground-truth curves",
        description="The embedded corpus: espeak-ng speech in 9 languages (en-us, en-gb, de, fr, es, nl, cs; it and pl "
        "only in test) with sample-exact phoneme timings and "
        "ground-truth ARKit-52 curves from Cohen-Massaro viseme blending. Splits: labeled (small, clean), "
        "unlabeled (large, diverse, augmented; truth kept only for evaluation), test (held-out voices and "
        "languages).",
    )
    verbs = corpus.add_subparsers(dest="corpus_command", metavar="VERB")

    build = verbs.add_parser(
        "build",
        help="build (or resume) the corpus; finished shards are reused",
        description="Draw every utterance from the seed, synthesise the shards that do not exist yet, write the "
        "manifests and print hours per split, voices, languages and throughput. Rerun to resume.",
    )
    build.add_argument("--out", default=DEFAULT_OUT, help=f"corpus folder (default {DEFAULT_OUT})")
    build.add_argument(
        "--quick", action="store_true", help="a ~2-minute corpus that builds in seconds (smoke runs)"
    )
    build.add_argument("--seed", type=int, default=0, help="seed of the utterance plan (default 0)")
    build.add_argument(
        "--fps", type=int, choices=(30, 60), default=30, help="rig frames per second (default 30)"
    )
    build.add_argument(
        "--labeled-minutes", type=float, help="size of the labeled split (default 10, quick 0.5)"
    )
    build.add_argument(
        "--unlabeled-minutes", type=float, help="size of the unlabeled split (default 130, quick 1)"
    )
    build.add_argument("--test-minutes", type=float, help="size of the test split (default 8, quick 0.5)")
    build.add_argument(
        "--labeled-languages",
        help="comma-separated languages of the labeled split (default en-us,de,es,nl,cs); the test split keeps at least "
        "one language that neither labeled nor unlabeled has",
    )
    build.add_argument("--workers", type=int, help="synthesis processes (default 2, quick 1)")
    build.set_defaults(handler=cmd_build)

    info = verbs.add_parser(
        "info",
        help="print a built corpus's summary",
        description="Print split sizes, "
        "voices and languages of a corpus folder (its corpus.json card and manifests).",
    )
    info.add_argument("dir", nargs="?", default=DEFAULT_OUT, help=f"corpus folder (default {DEFAULT_OUT})")
    info.set_defaults(handler=cmd_info)

    plot = verbs.add_parser(
        "plot",
        help="plot one utterance: waveform, phoneme labels and the main mouth curves",
        description="Draw one utterance's waveform with its phoneme intervals and its ground-truth curves "
        "(jawOpen, mouthClose, funnel, pucker, smile, ...) to a PNG.",
    )
    plot.add_argument("dir", nargs="?", default=DEFAULT_OUT, help="corpus folder or one split's folder")
    plot.add_argument("--utterance", help="utterance id such as labeled-000003 (default: the first one)")
    plot.add_argument("--out", default="reports/corpus_utterance.png", help="PNG to write")
    plot.set_defaults(handler=cmd_plot)
    corpus.set_defaults(handler=lambda args: corpus.print_help() or 2)


def cmd_build(args: argparse.Namespace) -> int:
    config = CorpusConfig.quick() if args.quick else CorpusConfig()
    sizes = {"labeled": args.labeled_minutes, "unlabeled": args.unlabeled_minutes, "test": args.test_minutes}
    splits = {name: replace(getattr(config, name), minutes=m) for name, m in sizes.items() if m is not None}
    if args.labeled_languages:
        languages = tuple(comma_list(args.labeled_languages))
        splits["labeled"] = replace(splits.get("labeled", config.labeled), languages=languages)
    extra = {"workers": args.workers} if args.workers else {}
    config = replace(config, seed=args.seed, fps=args.fps, **splits, **extra)
    summary = build_corpus(args.out, config=config)
    print(format_summary(summary))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    card = root / CARD_FILE
    if card.is_file():
        print(format_summary(json.loads(card.read_text())["summary"]))
        return 0
    for split_root in _split_roots(root):
        ds = Dataset(split_root)
        m = ds.manifest
        print(
            f"{ds.split:<9} {ds.seconds / 60:7.1f} min {len(ds):5d} utterances fps {ds.fps} "
            f"labels={m['has_labels']} ({m['label_source']}) truth={m['has_truth']} "
            f"languages {', '.join(m['info'].get('languages', []))}"
        )
    return 0


def _split_roots(root: Path) -> list[Path]:
    """``root`` itself if it is one dataset, else its split folders that hold a manifest."""
    roots = (
        [root]
        if (root / MANIFEST).is_file()
        else [root / s for s in SPLITS if (root / s / MANIFEST).is_file()]
    )
    if not roots:
        msg = f"{root}: no corpus manifest here (build one with `compress corpus build`)"
        raise DatasetError(msg)
    return roots


def _find_utterance(root: Path, utterance: str | None) -> tuple[Utterance, int]:
    for r in _split_roots(root):
        for utt in Dataset(r):
            if utterance is None or utt.id == utterance:
                return utt, Dataset(r).fps
    msg = f"{root}: no utterance {utterance!r}"
    raise DatasetError(msg)


def cmd_plot(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    utt, fps = _find_utterance(Path(args.dir), args.utterance)
    curves = utt.truth if utt.truth is not None else utt.labels
    t_audio = np.arange(len(utt.audio)) / SAMPLE_RATE
    t_frames = frame_times(len(curves), fps)
    fig, (ax_w, ax_c) = plt.subplots(2, 1, figsize=(14, 7), sharex=True, height_ratios=(1, 1.4))
    ax_w.plot(t_audio, utt.audio, lw=0.4, color="0.3")
    top = float(np.max(np.abs(utt.audio))) or 1.0
    for i, p in enumerate(utt.phonemes):
        colour = "tab:red" if p.viseme == "PP" else ("0.85" if p.viseme == "sil" else "tab:blue")
        ax_w.axvspan(
            p.start / SAMPLE_RATE, p.end / SAMPLE_RATE, color=colour, alpha=0.12 if i % 2 else 0.22, lw=0
        )
        ax_w.text((p.start + p.end) / 2 / SAMPLE_RATE, top * (0.8 if i % 2 else 0.95), p.phoneme,
                  ha="center", fontsize=7, color=colour if p.viseme == "PP" else "black")  # fmt: skip
    ax_w.set_ylabel("waveform")
    meta = utt.meta
    ax_w.set_title(
        f"{utt.id}  voice {meta.get('voice')}  rate {meta.get('rate')}  {meta.get('augment_description', '')}\n"
        f"{meta.get('text', '')}",
        fontsize=9,
    )
    for name in PLOT_CHANNELS:
        ax_c.plot(t_frames, curves[:, ARKIT_52.index(name)], lw=1.4 if name in ("jawOpen", "mouthClose") else 0.9,
                  label=name)  # fmt: skip
    for p in utt.phonemes:
        if p.viseme == "PP":
            ax_c.axvspan(p.start / SAMPLE_RATE, p.end / SAMPLE_RATE, color="tab:red", alpha=0.1, lw=0)
    ax_c.axhline(0.5, color="tab:red", lw=0.6, ls=":")
    ax_c.set_ylim(0, 1)
    ax_c.set_ylabel(f"ground truth ({fps} fps)")
    ax_c.set_xlabel("time (s)   red: bilabials p/b/m (mouthClose must pass 0.5)")
    ax_c.legend(loc="upper right", ncol=4, fontsize=8)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"wrote {out} ({utt.id}, {utt.seconds:.2f} s, {len(utt.phonemes)} phonemes)")
    return 0
