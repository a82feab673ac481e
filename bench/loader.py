"""Trainer data-path benchmark: audio tokens per second of one loader (one worker) against a bare
webdataset iteration decoding the same members, and the data-wait fraction of tiny training steps.

    python -m bench.loader [--minutes 10] [--batches 60] [--steps 20] [--workdir bench_out/loader] [--no-storage]

Audio tokens are the semantic tokens the loader delivers into packed rows (the report's task mixture,
original or enhanced audio 1:1); the reference reads every sample's FLAC, enhanced FLAC, JSON and
tokens and counts its tokens; each ratio compares the medians of three alternating passes. Targets
(issue 6): ratio >= 0.5, data wait < 5% with a loader process (`data.num_workers=1`, as real runs use);
the in-process figure is printed beside it.

Object storage (issue 12): the same dataset uploaded to a local S3-compatible server (moto, over HTTP on
loopback) and read in place: the loader's throughput remote/local in the same run (target >= 0.7) and
the data wait with one loader worker reading from it (target < 5%). Loopback S3 has no network latency
to speak of; what it measures is the cost of our path through s3fs (listings, ranged GETs, one
connection pool per worker), not a cloud region's bandwidth.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import soundfile as sf
import webdataset as wds

from bench.shards import make_recordings
from bench.timing import alternating_medians, passes_text
from model.tiny_folders import write_tiny_text_tokenizer, write_tiny_whisper
from pipeline.shards import ShardWriter
from trainer.data.loader import BatchLoader
from trainer.data.stream import BlendStream, DatasetSpec
from trainer.data.tasks import TASKS, SpecialIds

IDS = SpecialIds(blank=500, text_eos=501, media_begin=502, media_end=503, audio_offset=512, audio_vocab_size=512)
WEIGHTS = dict(zip(TASKS, [1, 7, 1, 1, 1, 1, 2]))


def write_dataset(root: Path, minutes: float) -> list[str]:
    """Shards of espeak speech with an enhanced copy and tokens in the tiny tokenizer's range; the texts."""
    texts = []
    with ShardWriter(root, sample_rate=16000, config={"bench": True}, target_bytes=32 << 20) as writer:
        for samples in make_recordings(minutes):
            samples = [replace(s, enhanced=0.5 * s.audio, tokens=s.tokens % 512,
                               record=replace(s.record, audio=replace(s.record.audio, has_enhanced=True)))
                       for s in samples]
            texts += [s.record.text for s in samples]
            writer.add_recording(samples, [])
    return texts


def loader_speed(dataset: str, tokenizer_dir: Path, corpus: Path, batches: int) -> float:
    """Audio tokens per second our loader delivers from `dataset` (a path or URL), one reader."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    stream = BlendStream([DatasetSpec(dataset)], rank=0, world=1, seed=0, seq_len=512, weights=WEIGHTS,
                         max_window_segments=4, enhanced_fraction=0.5, ids=IDS,
                         encode_text=lambda t: tok.encode(t, add_special_tokens=False), text_corpus=[str(corpus)])
    loader = BatchLoader(stream, 512, 4, pad_id=IDS.blank)
    started, audio_tokens = time.perf_counter(), 0
    for _ in range(batches):
        batch = loader.next_batch()
        audio_tokens += int(((batch.audio_ids >= IDS.audio_offset) & (batch.document_ids >= 0)).sum())
    return audio_tokens / (time.perf_counter() - started)


def bare_webdataset_speed(dataset: Path) -> float:
    """Audio tokens per second of a bare webdataset iteration decoding every member of `dataset`'s shards."""
    urls = [str(p) for p in sorted((dataset / "shards").glob("*.tar"))]
    started, bare_tokens = time.perf_counter(), 0

    def decode(sample):
        sf.read(io.BytesIO(sample["flac"]), dtype="float32")
        sf.read(io.BytesIO(sample["enh.flac"]), dtype="float32")
        json.loads(sample["json"])
        return np.load(io.BytesIO(sample["tok.npy"]), allow_pickle=False)

    for tokens in wds.WebDataset(urls, shardshuffle=False, empty_check=False).map(decode):
        bare_tokens += len(tokens)
    return bare_tokens / (time.perf_counter() - started)


def data_wait(dataset: Path | str, tokenizer_dir: Path, corpus: Path, whisper: Path, run_dir: Path, steps: int,
              workers: int) -> float:
    """Mean data-wait fraction of `steps` tiny pretraining steps (one process under torchrun), with
    `workers` loader processes (0: the loader runs in the training process)."""
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
               "-m", "jobs.pretrain", "--config", "configs/pretrain/tiny.yaml", f"run_dir={run_dir}",
               f"data.dataset={dataset}", f"data.text_tokenizer={tokenizer_dir}", f"data.text_corpus=[{corpus}]",
               f"model.whisper={whisper}", f"train.steps={steps}", "train.log_every=5", "train.eval_every=0",
               f"train.save_every={steps}", "train.threads=2", "train.global_batch_rows=2",
               f"data.num_workers={workers}"]
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return float(np.mean([r["train/data_wait_fraction"] for r in rows[1:] or rows]))  # the first window warms up


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workdir", default="bench_out/loader")
    parser.add_argument("--no-storage", action="store_true", help="skip the object-storage figures")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    texts = write_dataset(workdir / "dataset", args.minutes)
    (workdir / "corpus.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    tokenizer_dir = write_tiny_text_tokenizer(workdir / "text-tokenizer", texts)
    dataset, corpus = workdir / "dataset", workdir / "corpus.jsonl"
    ours, bare, passes = alternating_medians(lambda: loader_speed(str(dataset), tokenizer_dir, corpus, args.batches),
                                             lambda: bare_webdataset_speed(dataset))
    print(f"loader : {ours:9,.0f} audio tokens/s (one worker)   bare webdataset {bare:9,.0f} audio tokens/s   "
          f"ratio {ours / bare:.2f} (target >= 0.5; {passes_text(passes)})")
    whisper = write_tiny_whisper(workdir / "whisper")
    for workers in (0, 1):  # in the training process, then one loader process preparing batches ahead
        wait = data_wait(workdir / "dataset", tokenizer_dir, workdir / "corpus.jsonl", whisper,
                         workdir / f"run-{workers}", args.steps, workers)
        print(f"data wait of a tiny training step (1 process, CPU, data.num_workers={workers}): {wait:.1%} of the "
              f"step time" + (" (target < 5%)" if workers else ""))
    if not args.no_storage:
        bench_object_storage(workdir, tokenizer_dir, whisper, args.batches, args.steps)
    return 0


def bench_object_storage(workdir: Path, tokenizer_dir: Path, whisper: Path, batches: int, steps: int) -> None:
    from bench.local_s3 import start_local_s3, upload_folder

    corpus = workdir / "corpus.jsonl"
    with (workdir / "moto.log").open("wb") as log:
        server = start_local_s3("audiomill-bench-loader", log=log)
        try:
            url = upload_folder(workdir / "dataset", "s3://audiomill-bench-loader/dataset")
            remote, local, passes = alternating_medians(
                lambda: loader_speed(url, tokenizer_dir, corpus, batches),
                lambda: loader_speed(str(workdir / "dataset"), tokenizer_dir, corpus, batches))
            print(f"loader on S3 : {remote:9,.0f} audio tokens/s   same loader on local disk {local:9,.0f}   "
                  f"ratio {remote / local:.2f} (target >= 0.7; {passes_text(passes)})")
            wait = data_wait(url, tokenizer_dir, corpus, whisper, workdir / "run-s3", steps, 1)
            print(f"data wait of a tiny training step reading from S3 (data.num_workers=1): {wait:.1%} of the step "
                  "time (target < 5%)")
        finally:
            server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
