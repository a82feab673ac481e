"""The one error the trainer's data path raises for a run it cannot feed."""


class DataError(RuntimeError):
    """The data cannot feed this run (no shards for a rank, a corrupt shard under strict mode, ...)."""
