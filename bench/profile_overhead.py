"""Where the model-free overhead path spends its time: its stage functions on one long input, in this
process under cProfile (what the Ray workers run: decode, fixed windows, pack, write), top functions by
their own time.

    python -m bench.profile_overhead [--hours 0.5] [--top 15]
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from jobs.cli import load_settings
from pipeline.config import CurateConfig
from pipeline.shards.schema import PipelineInfo
from pipeline.stages.base import run_stage
from pipeline.stages.decode import decode_sessions
from pipeline.stages.diarize import DiarizeStage
from pipeline.stages.pack import pack_recording
from pipeline.stages.write import WriteSettings, write_recordings


def overhead_path(source: str, output: str, cfg: CurateConfig) -> None:
    windows = DiarizeStage(cfg.diarize, cfg.sample_rate)
    windows.setup()
    write = WriteSettings(output=output, target_bytes=cfg.shards.target_bytes, target_samples=cfg.shards.target_samples,
                          sample_rate=cfg.sample_rate)
    pipeline = PipelineInfo.for_config("bench", {})
    for work in decode_sessions(source, cfg.decode, cfg.sample_rate):
        [work] = run_stage(windows, [work])
        write_recordings([pack_recording(work, pipeline)], write)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=0.5)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "long.wav"
        subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", "-b", "16", str(wav), "synth", str(args.hours * 3600),
                        "pinknoise", "vol", "0.2"], check=True)
        cfg = load_settings(CurateConfig, "configs/curate/demo.yaml", [
            "input=x", f"output={tmp}/out", "enhance.enabled=false", "diarize.backend=fixed",
            "transcribe.enabled=false", "quality.enabled=false", "tokenize.enabled=false"])
        overhead_path(str(wav), f"{tmp}/warm", cfg)  # imports and first-call costs out of the way
        shutil.rmtree(f"{tmp}/warm")
        profile = cProfile.Profile()
        started = time.perf_counter()
        profile.runcall(overhead_path, str(wav), f"{tmp}/out", cfg)
        seconds = time.perf_counter() - started
    print(f"overhead path, one process, {args.hours:g} h: {seconds:.1f} s = {args.hours * 3600 / seconds:.0f}x real "
          f"time (under cProfile)")
    pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
