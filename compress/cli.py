"""The `compress` command line: a thin layer that builds configs and calls one stage function per verb.

Each ``compress/cmd_*.py`` module contributes its verbs through ``register(subparsers)``; every verb handler takes
the parsed ``argparse.Namespace`` and returns an exit code. Errors a user can cause are printed as one line.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from teacher.errors import FacedistillError

COMMAND_MODULES = (
    "compress.cmd_corpus",
    "compress.cmd_teacher",
    "compress.cmd_students",
    "compress.cmd_compress",
    "compress.cmd_profile",
    "compress.cmd_run",
    "compress.cmd_data",
)

DESCRIPTION = """\
facedistill: turn a large speech-to-face teacher into tiny on-device students and prove it.

Typical flow (each verb skips work that is already done, so reruns resume):
  compress corpus build      synthesise the embedded speech corpus with exact ground-truth ARKit curves
  compress teacher train     train the Whisper-encoder teacher on the labeled split
  compress label             pseudo-label audio with the teacher (resumable, shardable)
  compress distill           hybrid distillation of the student presets
  compress ship              prune + quantize + export ONNX/TFLite binaries with parity checks
  compress profile           measure binaries against device budgets (a CI gate)
  compress run               all of the above on the embedded default, then `compress report`
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="compress", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a verb group not built yet during development
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except FacedistillError as exc:
        print(f"compress {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `compress students | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"compress {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
