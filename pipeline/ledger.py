"""What is already done in a dataset: the recordings a (re)started job must skip (DESIGN.md, Exactly once)."""
from __future__ import annotations

from pipeline.shards.layout import DatasetLayout
from pipeline.shards.manifest import read_failed, read_manifest, read_rejected


def done_recordings(layout: DatasetLayout) -> set[str]:
    """Recording ids that are committed (in a manifest), rejected or failed."""
    done = set(read_manifest(layout, columns=["recording_id"]).column("recording_id").to_pylist())
    done.update(read_rejected(layout, columns=["recording_id"]).column("recording_id").to_pylist())
    done.update(read_failed(layout, columns=["recording_id"]).column("recording_id").to_pylist())
    return done
