"""Curation benchmark: the demo configuration's throughput with time per stage, the pipeline's own
overhead with the model stages off, and peak memory on a 2-hour input.

    python -m bench.curate [--dialogs 4] [--long-hours 2] [--workdir bench_out/curate]

Figures are printed against references measured in the same run: real time (1x), and a bare
torchcodec decode of the same inputs. Targets (issue 3): overhead path >= 200x real time per core;
peak memory on the 2-hour input < 4 GiB.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import psutil
import soundfile as sf

from jobs import curate
from jobs.build_models import build_all, curate_overrides
from jobs.cli import load_config
from pipeline.audio import decode_audio_file
from pipeline.synthetic import make_dialog

LINES = [("a", "en-us+f4", "The quick brown fox jumps over the lazy dog."),
         ("b", "en-gb+f2", "Please call me when you arrive at the station."),
         ("c", "en-029", "We measured the signal at three different frequencies."),
         ("a", "en-us+f4", "The weather will be cold and windy tomorrow morning.")]
MODEL_STAGES_OFF = ["enhance.enabled=false", "diarize.backend=fixed", "transcribe.enabled=false",
                    "quality.enabled=false"]


class PeakMemory:
    """Peak summed PSS of this process and all its descendants (Ray workers included), sampled.

    PSS, not RSS: Ray's object store is shared memory mapped by every worker that reads an object, and
    summing RSS would count one session's audio once per reader.
    """

    def __init__(self, interval: float = 0.2):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self.by_process: dict[str, int] = {}  # "pid name" -> its own peak, to see where memory goes

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    pss = p.memory_full_info().pss
                    name = f"{p.pid} {' '.join(p.cmdline()[:1])[-40:]}"
                except psutil.Error:
                    continue
                total += pss
                self.by_process[name] = max(self.by_process.get(name, 0), pss)
            self.peak = max(self.peak, total)
            time.sleep(self.interval)

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_job(input_dir: Path, output: Path, models: dict, overrides: list[str]) -> tuple[float, dict]:
    cfg = load_config("configs/curate/demo.yaml", [f"input={input_dir}", f"output={output}",
                                                   *curate_overrides(models), "ray.progress_bars=false", *overrides])
    started = time.perf_counter()
    assert curate.main(cfg) == 0
    import json

    return time.perf_counter() - started, json.loads((output / "dataset.json").read_text())["last_run"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dialogs", type=int, default=4, help="generated dialogs for the demo configuration")
    parser.add_argument("--long-hours", type=float, default=2.0, help="length of the long input")
    parser.add_argument("--workdir", default="bench_out/curate")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    workdir = Path(args.workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    (workdir / "dialogs").mkdir(parents=True)
    models = build_all(workdir / "models")
    cores = psutil.cpu_count(logical=True)

    seconds = 0.0
    for i in range(args.dialogs):
        dialog = make_dialog(LINES[i % 2:] + LINES[:i % 2], seed=i, noise_level=0.003)
        sf.write(workdir / "dialogs" / f"d{i}.wav", dialog.audio, dialog.sample_rate, subtype="PCM_16")
        seconds += dialog.seconds

    wall, summary = run_job(workdir / "dialogs", workdir / "demo_out", models, [])
    print(f"\ndemo configuration: {seconds:.0f} s of audio in {wall:.1f} s = {seconds / wall:.2f}x real time "
          f"({seconds / wall / cores:.2f}x per core, {cores} cores)")
    for stage, stage_seconds in summary["stage_seconds"].items():
        print(f"  {stage:<12} {stage_seconds:7.1f} s   {seconds / max(stage_seconds, 1e-9):8.1f}x real time")

    long_wav = workdir / "long" / "long.wav"
    long_wav.parent.mkdir()
    long_seconds = args.long_hours * 3600
    subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", "-b", "16", str(long_wav), "synth", str(long_seconds),
                    "pinknoise", "vol", "0.2"], check=True)
    started = time.perf_counter()
    decode_audio_file(str(long_wav), 16000)
    bare = time.perf_counter() - started
    with PeakMemory() as memory:
        wall, _ = run_job(long_wav.parent, workdir / "long_out", models, MODEL_STAGES_OFF)
    per_core = long_seconds / wall / cores
    print(f"\noverhead path (model stages off) on {args.long_hours:g} h: {wall:.1f} s = "
          f"{long_seconds / wall:.0f}x real time, {per_core:.0f}x per core (target >= 200x)")
    print(f"  bare torchcodec decode of the same file: {long_seconds / bare:.0f}x real time; "
          f"pipeline / bare decode = {bare / wall:.2f}")
    print(f"  peak memory (driver + Ray workers, PSS): {memory.peak / 2**30:.2f} GiB (target < 4 GiB)")
    for name, peak in sorted(memory.by_process.items(), key=lambda kv: -kv[1])[:5]:
        print(f"    {peak / 2**30:5.2f} GiB  {name}")


if __name__ == "__main__":
    main()
