"""Where a student's full-int8 error comes from: its int8 input alone, and each layer alone, without exporting.

``compress quantize --report-sensitivity`` prints the same table but also builds binaries; this prints only the
PyTorch-side simulation, in seconds, for several checkpoints on the windows ``compress run`` calibrates and checks
int8 on (even utterances calibrate, odd ones are held out). The "(input)" row is a floor under every int8 binary of
a waveform student: no keep-float choice removes it, so a floor above the 0.02 parity gate means full int8 cannot
pass on that input encoding.

    python bench/bench_int8_sensitivity.py --calib runs/default/pseudo runs/default/students/{small,tiny}/student.pt
"""

from __future__ import annotations

import argparse

from compress.cmd_compress import print_sensitivity, split_windows
from compress.quantize import input_sensitivity, sensitivity
from students.data import load_split
from students.model import load_student


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--calib", required=True, help="dataset folder (compress run: WORKDIR/pseudo)")
    ap.add_argument("--calib-windows", type=int, default=512)
    ap.add_argument("--heldout-windows", type=int, default=64)
    ap.add_argument("--rows", type=int, default=4, help="layers shown per checkpoint, worst first")
    args = ap.parse_args()
    split = load_split(args.calib, field=None)
    for ckpt in args.checkpoints:
        model = load_student(ckpt)
        calib, _ = split_windows(split, model, part="calib", count=args.calib_windows, seed=0)
        held, _ = split_windows(split, model, part="heldout", count=args.heldout_windows, seed=1)
        rows = sensitivity(model, calib, held)
        floor = input_sensitivity(model, calib, held)
        print(
            f"# {ckpt} ({model.config.input_encoding} input): {len(calib)} calibration / {len(held)} held-out windows"
        )
        print_sensitivity([floor, *rows[: args.rows]])


if __name__ == "__main__":
    main()
