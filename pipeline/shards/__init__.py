"""The curated-dataset format (DESIGN.md, schema version 1): records, writer, reader, manifests."""
from pipeline.shards.layout import DatasetError, DatasetLayout
from pipeline.shards.schema import (
    SCHEMA_VERSION, AsrInfo, AudioInfo, FailedRecord, PipelineInfo, Quality, RejectedRecord, SchemaError,
    SegmentRecord, TokenInfo, Word, expected_token_count, recording_id_for, segment_key,
)
from pipeline.shards.writer import SegmentSample, ShardWriter

__all__ = [
    "SCHEMA_VERSION", "AsrInfo", "AudioInfo", "DatasetError", "DatasetLayout", "FailedRecord", "PipelineInfo",
    "Quality", "RejectedRecord", "Sample", "SchemaError", "SegmentRecord", "SegmentSample", "ShardWriter",
    "TokenInfo", "Word", "expected_token_count", "iter_samples", "recording_id_for", "sample_pipeline",
    "segment_key", "shard_urls",
]


def __getattr__(name: str):
    # The reader imports webdataset, which imports torch (about a second); tools that only read
    # manifests (ls, stats) should not pay for it.
    if name in ("Sample", "iter_samples", "sample_pipeline", "shard_urls"):
        from pipeline.shards import reader

        return getattr(reader, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
