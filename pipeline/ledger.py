"""What is already done in a dataset: the recordings a (re)started job must skip (DESIGN.md, Exactly once)."""
from __future__ import annotations

from pipeline.shards.layout import DatasetLayout
from pipeline.shards.manifest import read_failed, read_manifest, read_rejected


def done_recordings(layout: DatasetLayout, retry_failed: bool = False) -> set[str]:
    """Recording ids that are committed (in a manifest), rejected or failed.

    With `retry_failed`, failed ones are not done: they are processed again, and a new outcome supersedes
    their failed rows (manifest.read_failed), so a transient error never loses an input for good."""
    done = set(read_manifest(layout, columns=["recording_id"]).column("recording_id").to_pylist())
    done.update(read_rejected(layout, columns=["recording_id"]).column("recording_id").to_pylist())
    if not retry_failed:
        done.update(read_failed(layout, columns=["recording_id"]).column("recording_id").to_pylist())
    return done
