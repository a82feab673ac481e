"""The pipeline's labels as hypotheses to score: from a curated dataset, or from stage outputs in memory.

Speaker labels are per recording (or per session of a long one), so each is prefixed with its recording
id: one person labelled in two sessions counts as two speakers, a confusion the trainer would see too.
Segments the pipeline rejected are not in the dataset and count as missed speech.
"""
from __future__ import annotations

from typing import Collection, Iterable

from pipeline.evaluation.references import recording_name
from pipeline.evaluation.scoring import HypothesisSegment
from pipeline.shards import DatasetLayout
from pipeline.shards.manifest import read_failed, read_manifest, read_rejected
from pipeline.stages.work import RecordingWork


def dataset_sources(layout: DatasetLayout, known: Collection[str] = ()) -> dict[str, str]:
    """Name -> source of every recording the dataset has an outcome for (committed, rejected or failed);
    names as the references give them where they match (`recording_name`)."""
    sources = set(read_manifest(layout, columns=["source"]).column("source").to_pylist())
    sources.update(read_rejected(layout, columns=["source"]).column("source").to_pylist())
    sources.update(read_failed(layout, columns=["source"]).column("source").to_pylist())
    return {recording_name(source, known): source for source in sorted(sources)}


def dataset_hypotheses(layout: DatasetLayout, sources: dict[str, str]) -> dict[str, list[HypothesisSegment]]:
    """The committed segments of each recording in `sources` (`dataset_sources`; none: an empty list)."""
    hypotheses: dict[str, list[HypothesisSegment]] = {name: [] for name in sources}
    name_of = {source: name for name, source in sources.items()}
    rows = read_manifest(layout, columns=["source", "recording_id", "start", "end", "speaker", "text"])
    for row in rows.to_pylist():
        hypotheses[name_of[row["source"]]].append(HypothesisSegment(
            row["start"], row["end"], f"{row['recording_id']}:{row['speaker']}", row["text"]))
    return hypotheses


def work_hypotheses(works: Iterable[RecordingWork], known: Collection[str] = ()) -> dict[str, list[HypothesisSegment]]:
    """The kept segments of stage outputs, in source time (a session's segments start at its offset)."""
    hypotheses: dict[str, list[HypothesisSegment]] = {}
    for work in works:
        segments = hypotheses.setdefault(recording_name(work.source, known), [])
        if work.active:
            segments += [HypothesisSegment(work.offset + s.start, work.offset + s.end,
                                           f"{work.recording_id}:{s.speaker}", s.text)
                         for s in work.kept_segments()]
    return hypotheses
