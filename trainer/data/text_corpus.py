"""The text corpus of the text-only task: documents from jsonl, parquet or plain-text files, endless."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Sequence

from trainer.data.errors import DataError


def iter_text_corpus(paths: Sequence[str]) -> Iterator[str]:
    """Documents of jsonl (`text` field), parquet (`text` column) or plain-text files (one per line)."""
    for path in paths:
        p = Path(path)
        if p.suffix == ".jsonl":
            with p.open() as f:
                for line in f:
                    if line.strip():
                        yield json.loads(line)["text"]
        elif p.suffix == ".parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(p).iter_batches(columns=["text"]):
                yield from batch.column(0).to_pylist()
        else:
            with p.open() as f:
                yield from (line.strip() for line in f if line.strip())


class TextDocuments:
    """The text corpus as an endless sequence (it repeats when exhausted); `consumed` is its state."""

    def __init__(self, paths: Sequence[str]):
        self.paths, self.consumed, self._docs = list(paths), 0, None

    def seek(self, consumed: int) -> None:
        self.consumed, self._docs = consumed, None

    def next(self) -> str:
        if self._docs is None:
            self._docs = self._from(self.consumed)
        self.consumed += 1
        return next(self._docs)

    def _from(self, skip: int) -> Iterator[str]:
        seen = 0
        while True:
            start = seen
            for doc in iter_text_corpus(self.paths):
                if seen >= skip:
                    yield doc
                seen += 1
            if seen == start:
                raise DataError(f"the text corpus {self.paths} holds no documents")
