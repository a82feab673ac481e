"""Quality-metric benchmark: DNSMOS P.835 through the stage's scorer against speechmos on one core.

    python -m bench.quality [--seconds 60] [--hops 1,3,9]

Generated speech over noise, cut into segment-like clips (2-27 s, as diarization leaves them), is scored
in one run by speechmos' own `DNSMOS` (Microsoft's package, P.808 included, one window per call, its
sessions on onnxruntime's default threads) and by `pipeline.stages.dnsmos.DnsmosScorer` (the same model
file and windows, no P.808, one thread, the trunk and the head's first convolution shared by overlapping
windows) in float32 and bfloat16 (where the CPU has it natively) at several window hops, and at hop 1 with
the float32 trunk all in onnxruntime (no Winograd convolutions). Speeds are per core: audio seconds per CPU second
of this process (onnxruntime pins its own threads, so wall time on a "pinned" process would count two
cores as one). Silero VAD over the same clips is a second reference. At hop 1 the scores must agree with
speechmos' within 0.01; the target is 40x real time per core.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from pipeline.stages.dnsmos import DnsmosScorer, WinogradTrunk, cpu_has_bfloat16
from pipeline.synthetic import make_dialog

LINES = [("a", "en-us+f4", "The quick brown fox jumps over the lazy dog."),
         ("b", "en-gb+f2", "Please call me when you arrive at the station."),
         ("c", "en-029", "We measured the signal at three different frequencies."),
         ("a", "en-us+f4", "The weather will be cold and windy tomorrow morning.")]


def segment_clips(seconds: float, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    speech = make_dialog(LINES * 4, seed=seed, noise_level=0.005).audio
    clips, total = [], 0.0
    while total < seconds:
        length = float(min(rng.uniform(2.0, 27.0), seconds - total + 2.0))
        start = int(rng.integers(0, max(1, len(speech) - int(length * 16000))))
        clips.append(np.clip(speech[start:start + int(length * 16000)], -1.0, 1.0))
        total += len(clips[-1]) / 16000
    return clips


def timed(score, clips) -> tuple[float, list]:
    """CPU seconds (every thread of this process) and the results."""
    started = time.process_time()
    results = [score(c) for c in clips] if not isinstance(score, DnsmosScorer) else score.score(clips)
    return time.process_time() - started, results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="audio to score")
    parser.add_argument("--hops", default="1,3,9", help="window hops (s) to measure; 1 is speechmos' own")
    args = parser.parse_args(argv)
    import speechmos.dnsmos
    from silero_vad import get_speech_timestamps, load_silero_vad
    import torch

    torch.set_num_threads(1)
    clips = segment_clips(args.seconds)
    audio = sum(len(c) for c in clips) / 16000
    folder = os.path.join(os.path.dirname(speechmos.dnsmos.__file__), "dnsmos_models")
    reference = speechmos.dnsmos.DNSMOS(os.path.join(folder, "sig_bak_ovr.onnx"),
                                        os.path.join(folder, "model_v8.onnx"))
    reference(clips[0], 16000, False)  # warm-up
    theirs_s, theirs = timed(lambda c: reference(c, 16000, False), clips)
    vad = load_silero_vad(onnx=True)
    vad_s, _ = timed(lambda c: get_speech_timestamps(torch.from_numpy(c), vad, sampling_rate=16000), clips)
    print(f"DNSMOS per core (audio s per CPU s): {len(clips)} clips, {audio:.0f} s of audio")
    print(f"  speechmos (reference):  {audio / theirs_s:7.1f}x real time")
    print(f"  Silero VAD (reference): {audio / vad_s:7.1f}x real time")
    exact = True
    hops = [float(h) for h in args.hops.split(",")]
    # the float32 trunk all in onnxruntime, hop 1: what the Winograd convolutions are measured against
    variants = [("float32", hop, True) for hop in hops] + [("float32", 1.0, False)]
    if cpu_has_bfloat16():
        variants += [("bfloat16", hop, True) for hop in hops]
    for precision, hop, winograd in variants:
        scorer = DnsmosScorer(threads=1, hop_seconds=hop, precision=precision, winograd=winograd)
        scorer.score(clips[:1])
        ours_s, ours = timed(scorer, clips)
        worst = max(abs(o[n] - t[f"{n}_mos"]) for o, t in zip(ours, theirs) for n in ("sig", "bak", "ovrl"))
        trunk = ("Winograd (NNPACK)" if isinstance(scorer.run_trunk, WinogradTrunk)
                 else "onnxruntime" if precision == "float32" else "oneDNN")
        print(f"  scorer, {precision:<8}, {trunk:<17}, hop {hop:g} s: {audio / ours_s:6.1f}x real time   ratio to "
              f"speechmos: {theirs_s / ours_s:5.2f}   largest score difference: {worst:.4f}   target >= 40x: "
              f"{'met' if audio / ours_s >= 40 else 'NOT met'}")
        exact = exact and (hop != 1.0 or worst < 0.01)
    picked = DnsmosScorer(threads=1, precision="float32").run_trunk
    print(f"  float32 trunk an actor picks here (the faster on a chunk, timed at start): "
          f"{'Winograd (NNPACK)' if isinstance(picked, WinogradTrunk) else 'onnxruntime'}")
    if not cpu_has_bfloat16():
        print("  (no bfloat16 row: this CPU has no native bfloat16, so `dnsmos_precision: auto` is float32 here)")
    return 0 if exact else 1


if __name__ == "__main__":
    raise SystemExit(main())
