"""`make demo`: generate dialogs with known truth, write them as a curated dataset, inspect it.

    python -m jobs.demo --config configs/demo.yaml [key=value ...]

Rerunning adds nothing: recordings already committed or rejected are skipped (pipeline.ledger).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from omegaconf import DictConfig, OmegaConf

from jobs.cli import parse_job_args
from pipeline import __version__, inspect as shards_cli
from pipeline.ledger import done_recordings
from pipeline.shards import (
    AsrInfo, AudioInfo, PipelineInfo, RejectedRecord, SegmentRecord, SegmentSample, ShardWriter, recording_id_for,
)
from pipeline.shards.layout import atomic_write_bytes
from pipeline.synthetic import Dialog, make_dialog


def generate_recordings(cfg: DictConfig, raw_dir: Path) -> list[tuple[Path, dict]]:
    """Write `cfg.recordings` dialogs as WAV plus a truth JSON each (kept when already there)."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    speakers = list(cfg.speakers)
    out = []
    for i in range(cfg.recordings):
        n_speakers = int(rng.integers(2, min(3, len(speakers)) + 1))
        cast = [speakers[j] for j in rng.choice(len(speakers), n_speakers, replace=False)]
        n_turns = int(rng.integers(cfg.turns_per_recording[0], cfg.turns_per_recording[1] + 1))
        lines = [(cast[t % n_speakers].name, cast[t % n_speakers].voice,
                  cfg.sentences[int(rng.integers(len(cfg.sentences)))]) for t in range(n_turns)]
        wav, truth_path = raw_dir / f"dialog-{i:03d}.wav", raw_dir / f"dialog-{i:03d}.truth.json"
        if not (wav.exists() and truth_path.exists()):
            dialog = make_dialog(lines, sample_rate=cfg.sample_rate, gap_seconds=cfg.gap_seconds,
                                 seed=cfg.seed + i, noise_level=cfg.noise_level)
            atomic_write_bytes(truth_path, json.dumps(dialog_truth(dialog), indent=1).encode())
            sf.write(wav, dialog.audio, dialog.sample_rate, subtype="PCM_16")
            print(f"generated {wav} ({dialog.seconds:.1f} s, {len(lines)} turns, {n_speakers} speakers)")
        out.append((wav, json.loads(truth_path.read_text())))
    return out


def dialog_truth(dialog: Dialog) -> dict:
    return {"sample_rate": dialog.sample_rate,
            "turns": [{"speaker": t.speaker, "text": t.text, "start": t.start, "end": t.end} for t in dialog.turns]}


def recording_samples(source: str, audio: np.ndarray, sample_rate: int, truth: dict, cfg: DictConfig,
                      pipeline: PipelineInfo) -> tuple[list[SegmentSample], list[RejectedRecord]]:
    """One segment per true turn; turns shorter than the minimum are rejected with their duration."""
    recording_id = recording_id_for(source)
    samples, rejected, previous_end = [], [], None
    for index, turn in enumerate(truth["turns"]):
        first, last = round(turn["start"] * sample_rate), round(turn["end"] * sample_rate)
        start, end = first / sample_rate, last / sample_rate
        record = SegmentRecord(
            recording_id=recording_id, source=source, segment_index=index, start=start, end=end,
            gap_before=None if previous_end is None else start - previous_end, speaker=turn["speaker"],
            language="en", language_prob=1.0, text=turn["text"], asr=AsrInfo(model="generated-script"),
            audio=AudioInfo(sample_rate=sample_rate, num_samples=last - first), pipeline=pipeline)
        previous_end = end
        if record.duration < cfg.min_segment_seconds:
            rejected.append(RejectedRecord(source=source, recording_id=recording_id, key=record.key,
                                           stage="filter", reason="too_short", duration=record.duration,
                                           metrics={"duration": record.duration}))
        else:
            samples.append(SegmentSample(record=record, audio=audio[first:last]))
    return samples, rejected


def main(cfg: DictConfig) -> int:
    workdir = Path(cfg.workdir)
    dataset, plots = workdir / "dataset", workdir / "plots"
    config = OmegaConf.to_container(cfg, resolve=True)
    pipeline = PipelineInfo.for_config(__version__, config)

    recordings = generate_recordings(cfg, workdir / "raw")

    with ShardWriter(dataset, target_bytes=cfg.shards.target_bytes, target_samples=cfg.shards.target_samples,
                     sample_rate=cfg.sample_rate, config=config, models={"asr": "generated-script"}) as writer:
        done = done_recordings(writer.layout)
        for wav, truth in recordings:
            source = str(wav.resolve())
            if recording_id_for(source) in done:
                continue
            audio, sample_rate = sf.read(wav, dtype="float32")
            samples, rejected = recording_samples(source, audio, sample_rate, truth, cfg, pipeline)
            writer.add_recording(samples, rejected)
        print(f"committed {len(writer.committed)} new shards, skipped {len(done)} recordings already done")

    for command in (["ls"], ["stats"], ["verify", "--quiet"], ["plot", "--out", str(plots)]):
        print(f"\n$ audiomill-shards {command[0]} {dataset} {' '.join(command[1:])}")
        status = shards_cli.main([command[0], str(dataset), *command[1:]])
        if status != 0:
            return status
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_job_args(__doc__.splitlines()[0])))
