"""Semantic tokenizer benchmark: audio-seconds per second on the tiny preset on CPU, batched vs one by one.

    python -m bench.tokenize [--minutes 10] [--batch-sizes 4,32] [--threads 2]

Clips are curated-segment-like (1-27 s). The same tokenizer runs the same clips twice in one run:
one `tokenize` call over all of them (30 s chunks batched by length) and one call per clip. Ids must
agree; the ratio batched / one-by-one is printed for each batch size. On CPU the tiny preset is
attention-bound (the math attention path holds batch x heads x T x T scores), so large batches lose;
on a GPU with the full-size tokenizer the matmuls dominate and batching is what pays.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from model.semantic_tokenizer import SemanticTokenizer
from model.tiny_folders import write_tiny_semantic_tokenizer


def make_clips(minutes: float, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    clips, total = [], 0.0
    while total < minutes * 60:
        seconds = float(rng.uniform(1.0, 27.0))
        clips.append((0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32))
        total += seconds
    return clips


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--batch-sizes", default="4,32", help="comma-separated chunk batch sizes to compare")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    clips = make_clips(args.minutes)
    audio_seconds = sum(len(c) for c in clips) / 16000
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = SemanticTokenizer.from_folder(write_tiny_semantic_tokenizer(Path(tmp) / "tok"))
    tokenizer.tokenize(clips[:4])  # warm-up
    started = time.perf_counter()
    single = [tokenizer.tokenize([c])[0] for c in clips]
    single_speed = audio_seconds / (time.perf_counter() - started)
    print(f"tokenizer (tiny preset, CPU, {args.threads} threads): {len(clips)} clips, {audio_seconds / 60:.1f} min")
    print(f"  one by one:        {single_speed:8.1f} audio-s/s")
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        tokenizer.batch_size = batch_size
        started = time.perf_counter()
        batched = tokenizer.tokenize(clips)
        speed = audio_seconds / (time.perf_counter() - started)
        assert all(np.array_equal(a, b) for a, b in zip(batched, single)), "batched and one-by-one ids differ"
        print(f"  batched ({batch_size:3d}/batch): {speed:8.1f} audio-s/s   ratio to one-by-one: "
              f"{speed / single_speed:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
