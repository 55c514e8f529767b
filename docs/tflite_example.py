"""Animate a WAV with an exported windowed student (.tflite) using only its model card.

    python docs/tflite_example.py runs/default/binaries/edge.a16w8.tflite speech.wav > curves.csv

Needs numpy, soundfile and ai-edge-litert only (no facedistill). The WAV must be mono 16 kHz.
"""

import json
import sys

import numpy as np
import soundfile as sf
from ai_edge_litert.interpreter import Interpreter


def animate(model_path: str, wav_path: str) -> np.ndarray:
    card = json.loads(open(model_path + ".card.json").read())
    inp, out = card["input"], card["output"]
    audio, rate = sf.read(wav_path, dtype="float32")
    assert audio.ndim == 1 and rate == inp["sample_rate"], "need mono 16 kHz audio"
    runner = Interpreter(model_path=model_path).get_signature_runner()
    (in_name,), (out_name,) = runner.get_input_details(), runner.get_output_details()
    q_in, q_out = inp.get("quantization"), out.get("quantization")
    past, width = inp["past_samples"], inp["window_samples"]
    n_frames = -(-len(audio) * out["fps"] // rate)  # frames whose anchor lies in the clip
    k = np.arange(max(1, n_frames))
    anchors = 64 * ((2 * k * rate + out["fps"] * 64) // (2 * out["fps"] * 64))  # k / fps on the 4 ms grid
    padded = np.pad(audio, (past, width))  # zeros before the start and after the end
    enc = inp.get("encoding", {"type": "linear"})
    if enc["type"] == "mulaw":  # the binary reads mu-law companded audio (the card's formula)
        padded = (np.sign(padded) * np.log1p(enc["mu"] * np.abs(padded)) / np.log1p(enc["mu"])).astype(
            np.float32
        )
    frames = []
    for a in anchors:
        x = padded[a : a + width][None]  # audio[a - past, a - past + width)
        if q_in:  # int8 / int16 input: quantize with the card's scale / zero point
            lim = np.iinfo(q_in["dtype"])
            x = np.clip(np.round(x / q_in["scale"]) + q_in["zero_point"], lim.min, lim.max).astype(
                q_in["dtype"]
            )
        y = runner(**{in_name: x})[out_name][0]
        frames.append((y.astype(np.float32) - q_out["zero_point"]) * q_out["scale"] if q_out else y)
    return np.stack(frames)  # [frames, channels] at out["fps"], columns = out["channel_names"]


if __name__ == "__main__":
    card = json.loads(open(sys.argv[1] + ".card.json").read())
    print(",".join(card["output"]["channel_names"]))
    np.savetxt(sys.stdout, animate(sys.argv[1], sys.argv[2]), delimiter=",", fmt="%.5f")
