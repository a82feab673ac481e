"""The stage protocol: `setup()` loads models once per worker, `process()` handles one recording.

`run_stage` is the one place that turns a stage's exception for one recording into a Failure, so a
bad input fails alone and every outcome is recorded (DESIGN.md, Exactly once).
"""
from __future__ import annotations

import time
import traceback
from abc import ABC, abstractmethod
from dataclasses import replace
from typing import Sequence

from pipeline.stages.work import Failure, RecordingWork


class Stage(ABC):
    """Subclasses set `name` and implement `process`; `process_batch` may batch across recordings."""
    name = "stage"

    def setup(self) -> None:
        """Load models; called once per worker (Ray actor) before any batch."""

    @abstractmethod
    def process(self, work: RecordingWork) -> RecordingWork:
        """One recording in, the same recording with this stage's results out (never mutated)."""

    def process_batch(self, works: Sequence[RecordingWork]) -> list[RecordingWork]:
        return [self.process(w) for w in works]


def failed(work: RecordingWork, stage: str, error: BaseException) -> RecordingWork:
    message = str(error) or traceback.format_exception_only(type(error), error)[-1].strip()
    return replace(work, failure=Failure(stage=stage, error_type=type(error).__name__, message=message),
                   audio=None, enhanced=None)


def run_stage(stage: Stage, works: Sequence[RecordingWork]) -> list[RecordingWork]:
    """Apply a stage to the active works; on a batch error, retry one by one so only the bad one fails."""
    active = [w for w in works if w.active]
    started = time.perf_counter()
    try:
        done = stage.process_batch(active)
    except Exception:  # one bad recording must not sink the batch: isolate it
        done = []
        for w in active:
            try:
                done.append(stage.process(w))
            except Exception as e:
                done.append(failed(w, stage.name, e))
    per_item = (time.perf_counter() - started) / max(1, len(active))
    by_id = {id(w): d for w, d in zip(active, done)}
    return [replace(by_id[id(w)], stage_seconds=w.stage_seconds + ((stage.name, per_item),))
            if id(w) in by_id else w for w in works]
