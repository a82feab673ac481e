"""The curation job's closing summary: counts by outcome, hours, rejected and failed by reason, speed."""
from __future__ import annotations

import pickle
from collections import Counter
from dataclasses import dataclass, field

from pipeline.stages.write import RecordingOutcome


@dataclass
class CurationSummary:
    inputs: int = 0
    skipped_done: int = 0
    recordings: Counter = field(default_factory=Counter)      # outcome -> count
    hours_in: float = 0.0
    hours_out: float = 0.0
    segments: int = 0
    rejected: Counter = field(default_factory=Counter)        # "stage/reason" -> rows
    failed: Counter = field(default_factory=Counter)          # "stage/error_type" -> recordings
    stage_seconds: Counter = field(default_factory=Counter)   # stage -> summed seconds
    wall_seconds: float = 0.0
    bytes_committed: int = 0                                  # sample bytes the writers committed
    driver_bytes: int = 0                                     # bytes of outcome records the driver received
    job: str = "curate"                                       # whose lines these are (curate, prepare_sft)

    def add(self, outcome: RecordingOutcome) -> None:
        self.recordings[outcome.outcome] += 1
        self.hours_in += outcome.seconds / 3600
        self.hours_out += outcome.seconds_out / 3600
        self.segments += outcome.segments
        self.rejected.update(outcome.rejected)
        if outcome.failed:
            self.failed[outcome.failed] += 1
        for stage, seconds in outcome.stage_seconds:
            self.stage_seconds[stage] += seconds
        self.bytes_committed += outcome.bytes_written
        self.driver_bytes += len(pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL))  # as it travelled

    def progress_line(self, elapsed_seconds: float) -> str:
        """One line of how far the job has come, for the console while it runs."""
        done = sum(self.recordings.values())
        if not done:  # the stages' actors are still loading their models, or the first recordings are long
            return f"{self.job}: no recording finished yet, {elapsed_seconds:.0f} s"
        counts = ", ".join(f"{self.recordings[k]} {k}" for k in ("committed", "rejected", "failed")
                           if self.recordings[k])
        return (f"{self.job}: {done} recording(s) done ({counts}), "
                f"{self.hours_in * 60:.1f} min of audio, "
                f"{self.segments} segments kept, {elapsed_seconds:.0f} s")

    @property
    def audio_hours_per_hour(self) -> float:
        return self.hours_in / (self.wall_seconds / 3600) if self.wall_seconds else 0.0

    def to_dict(self) -> dict:
        return {"inputs": self.inputs, "skipped_already_done": self.skipped_done,
                "recordings": dict(self.recordings), "hours_in": self.hours_in, "hours_out": self.hours_out,
                "segments": self.segments, "rejected_by_reason": dict(self.rejected),
                "failed_by_stage": dict(self.failed), "stage_seconds": dict(self.stage_seconds),
                "wall_seconds": self.wall_seconds, "audio_hours_per_hour": self.audio_hours_per_hour,
                "bytes_committed": self.bytes_committed, "driver_bytes": self.driver_bytes}

    def format(self) -> str:
        rows = [("inputs", self.inputs), ("skipped (already done)", self.skipped_done),
                *[(f"recordings {k}", v) for k, v in sorted(self.recordings.items())],
                ("hours in", f"{self.hours_in:.4f}"), ("hours out", f"{self.hours_out:.4f}"),
                ("segments", self.segments),
                *[(f"rejected {k}", v) for k, v in sorted(self.rejected.items())],
                *[(f"failed {k}", v) for k, v in sorted(self.failed.items())],
                *[(f"stage seconds {k}", f"{v:.1f}") for k, v in self.stage_seconds.items()],
                ("MB committed by the writers", f"{self.bytes_committed / 1e6:.1f}"),
                ("KB received by the driver", f"{self.driver_bytes / 1e3:.1f}"),
                ("wall seconds", f"{self.wall_seconds:.1f}"),
                ("throughput (audio h / h)", f"{self.audio_hours_per_hour:.1f}")]
        width = max(len(k) for k, _ in rows)
        title = "curation summary" if self.job == "curate" else f"{self.job} summary"
        return "\n".join([title, "-" * (width + 14)] + [f"{k:<{width}}  {v:>12}" for k, v in rows])
