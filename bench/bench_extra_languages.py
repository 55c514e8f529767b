"""Do pseudo-labels in more languages make better students? (issue 4: the method's claim that a large, diverse
pseudo-labeled set is what carries students to unseen voices and languages)

    python bench/bench_extra_languages.py --workdir runs/default --out runs/extra_languages
        [--languages da,el,la,mk,ru,uk] [--minutes 130] [--preset tiny-mel] [--steps 4000]

Steps, each resumable (rerun the same command) and each a plain repo command or API call:
  1. synthesise --minutes of new unlabeled speech in --languages (the default unlabeled split's voices, rates,
     pitches and augmentation; only the languages differ; none of them is a test language) -> OUT/corpus/unlabeled;
  2. `compress label` it with WORKDIR's teacher -> OUT/pseudo_extra (no ground truth is used);
  3. `compress distill` --preset twice from the same stage-1 `small` (WORKDIR's, copied), same config and steps:
     on WORKDIR's pseudo-labels alone (control) and on them pooled with OUT/pseudo_extra;
  4. print both students' test-split metrics (the cards' PyTorch numbers) beside WORKDIR's teacher's.
Prints measured numbers only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from teacher.corpus import CorpusConfig, SplitConfig, build_corpus


def _run(*cmd: str) -> None:
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)


def _distill(pseudo: Path, out: Path, args: argparse.Namespace, config: Path) -> dict:
    small = out / "small"
    if not (small / "student.pt").is_file():
        shutil.copytree(args.workdir / "students" / "small", small, dirs_exist_ok=True)
    _run(
        "compress", "distill", "--pseudo", str(pseudo), "--out", str(out), "--config", str(config),
        "--labeled", str(args.workdir / "corpus" / "labeled"), "--test", str(args.workdir / "corpus" / "test"),
    )  # fmt: skip
    return json.loads((out / args.preset / "card.json").read_text())


def label_extra_speech(out: Path, workdir: Path, unlabeled: SplitConfig, *, seed: int) -> tuple[dict, Path]:
    """Synthesise the ``unlabeled`` split plan into OUT/corpus/unlabeled, label it with WORKDIR's teacher into
    OUT/pseudo_extra and link both label sets under OUT/pool (one dataset folder for compress distill). Returns the
    extra split's build summary and the pool folder. Each step resumes."""
    base = CorpusConfig()
    corpus = replace(
        base,
        seed=seed,
        unlabeled=unlabeled,
        labeled=replace(base.labeled, minutes=0.2),  # required by the builder; unused here
        test=replace(base.test, minutes=0.2),  # required by the builder; unused here
    )
    summary = build_corpus(out / "corpus", config=corpus)
    _run("compress", "label", str(out / "corpus" / "unlabeled"), "--teacher", str(workdir / "teacher"),
         "--out", str(out / "pseudo_extra"))  # fmt: skip
    pool = out / "pool"
    pool.mkdir(exist_ok=True)
    for name, target in (("base", workdir / "pseudo"), ("extra", out / "pseudo_extra")):
        if not (pool / name).exists():
            os.symlink(target.resolve(), pool / name)
    return summary["splits"]["unlabeled"], pool


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("runs/default"))
    ap.add_argument("--out", type=Path, default=Path("runs/extra_languages"))
    ap.add_argument("--languages", default="da,el,la,mk,ru,uk")
    ap.add_argument(
        "--minutes",
        type=float,
        default=130.0,
        help="extra unlabeled minutes (default: as many as the default unlabeled split)",
    )
    ap.add_argument("--preset", default="tiny-mel")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=1, help="seed of the extra corpus's utterance plan")
    args = ap.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    base = CorpusConfig()
    languages = tuple(args.languages.split(","))
    clash = set(languages) & set(base.test.languages)
    if clash:
        sys.exit(f"--languages: {sorted(clash)} are test-split languages; pick others")
    unlabeled = replace(base.unlabeled, minutes=args.minutes, languages=languages)
    extra, pool = label_extra_speech(out, args.workdir, unlabeled, seed=args.seed)
    print(f"# extra unlabeled speech: {extra['minutes']:.1f} min, {extra['utterances']} utterances, "
          f"{len(extra['voices'])} voices in {', '.join(extra['languages'])}")  # fmt: skip

    small_card = json.loads((args.workdir / "students" / "small" / "card.json").read_text())
    config = dict(small_card["distill_config"])
    config["presets"] = [args.preset]
    config["steps"] = {**config["steps"], args.preset: args.steps}
    config_path = out / "distill_config.json"
    config_path.write_text(json.dumps(config, indent=2))

    rows = {
        "base": _distill(args.workdir / "pseudo", out / "students_base", args, config_path),
        "base+extra": _distill(pool, out / "students_pool", args, config_path),
    }
    teacher = json.loads((args.workdir / "teacher" / "metrics.json").read_text())["metrics"]["test"]
    t_mse, t_lip = teacher["mse"], teacher["lip_closure"]
    print(
        f"# teacher (test split): mse {t_mse:.6f}, mse/mean {teacher['mse_ratio_to_mean']:.4f}, lip {t_lip:.3f}"
    )
    print(f"{'labels':<12}{'hours':>7}{'mse':>11}{'mse/mean':>10}{'x teacher':>11}{'lip':>7}{'jitter':>8}")
    for name, card in rows.items():
        m = card["test"]["metrics"]
        hours = card["parent"]["pseudo_labels_seconds"] / 3600
        print(
            f"{name:<12}{hours:>7.2f}{m['mse']:>11.6f}{m['mse_ratio_to_mean']:>10.4f}{m['mse'] / t_mse:>10.2f}x"
            f"{m['lip_closure']:>7.3f}{m['jitter_ratio']:>8.3f}"
        )
    a, b = (rows[k]["test"]["metrics"]["mse"] for k in ("base", "base+extra"))
    print(f"# base+extra vs base: test MSE {100 * (b / a - 1):+.1f} %")


if __name__ == "__main__":
    main()
