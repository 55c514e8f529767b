"""Stream a WAV through an exported streaming student (.tflite step + head) using only its card.

    python docs/stream_example.py runs/default/binaries/tiny.stream.a16w8.tflite.card.json speech.wav > curves.csv

Needs numpy, soundfile and ai-edge-litert only (no facedistill). The WAV must be mono 16 kHz.
"""

import json
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from ai_edge_litert.interpreter import Interpreter


def to_tensor(x: np.ndarray, t: dict) -> np.ndarray:  # float -> the tensor's dtype (int8/int16 per its scale)
    q, x = t["quantization"], np.ascontiguousarray(x, dtype=np.float32)  # history slices are views
    if q is None:
        return x
    info = np.iinfo(t["dtype"])
    return np.clip(np.round(x / q["scale"]) + q["zero_point"], info.min, info.max).astype(t["dtype"])


def from_tensor(y: np.ndarray, t: dict) -> np.ndarray:
    q = t["quantization"]
    return y if q is None else (y.astype(np.float32) - q["zero_point"]) * q["scale"]


def stream(card_path: str, wav_path: str) -> np.ndarray:
    card = json.loads(Path(card_path).read_text())
    folder, sr, block, sched = (
        Path(card_path).parent,
        card["sample_rate"],
        card["block_samples"],
        card["schedule"],
    )
    runners = {
        g: Interpreter(model_path=str(folder / s["file"])).get_signature_runner()
        for g, s in card["graphs"].items()
    }

    def call(graph: str, *arrays: np.ndarray) -> list[np.ndarray]:
        spec = card["graphs"][graph]
        out = runners[graph](**{t["tensor"]: to_tensor(a, t) for t, a in zip(spec["inputs"], arrays)})
        return [from_tensor(out[t["tensor"]], t) for t in spec["outputs"]]

    audio, rate = sf.read(wav_path, dtype="float32")
    assert audio.ndim == 1 and rate == sr, "need mono 16 kHz audio"
    k = np.arange(max(1, -(-len(audio) * sched["fps"] // sr)))  # frames whose anchor lies in the clip
    anchors = np.array(sched["anchors_first_second"])[k % sched["fps"]] + sr * (k // sched["fps"])
    points, index = np.unique(anchors[:, None] + sched["head_points_offsets"], return_inverse=True)
    due = (points + sched["head_future_samples"]) // 64  # point p runs once this many cells are in
    B = card["block_cells"]  # cells per step call (block = 64 * B samples)
    blocks = -(-max(int(due[-1]), -(-len(audio) // 64)) // B)
    audio = np.pad(audio, (0, blocks * block - len(audio)))  # zeros after the end, as the model was trained
    enc = card.get("input_encoding", {"type": "linear"})
    if enc["type"] == "mulaw":  # the step graph reads mu-law companded audio (the card's formula)
        audio = (np.sign(audio) * np.log1p(enc["mu"] * np.abs(audio)) / np.log1p(enc["mu"])).astype(
            np.float32
        )
    state = [
        np.tile(np.float32(s["initial_value_per_channel"])[:, None], s["shape"][-1])[None]
        for s in card["state"]
    ]
    K, curves = state[-1].shape[-1], [call("head", state[-1])[0][0] for d in due if d == 0]
    for b in range(blocks):
        *state, history = call("step", audio[None, b * block : (b + 1) * block], *state)
        while len(curves) < len(points) and due[len(curves)] <= (b + 1) * B:  # due inside this block
            j = due[len(curves)] - b * B  # history[:, :, j : j + K] = head buffer after the block's j-th cell
            curves.append(call("head", history[:, :, j : j + K])[0][0])
    return np.stack(curves)[index.reshape(len(k), -1)].mean(axis=1)  # frame = mean of its head points


if __name__ == "__main__":
    card = json.loads(Path(sys.argv[1]).read_text())
    frames = stream(sys.argv[1], sys.argv[2])
    print(",".join(card["output"]["channel_names"]))
    np.savetxt(sys.stdout, frames, delimiter=",", fmt="%.5f")
