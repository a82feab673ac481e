"""The text corpus of the text-only task: documents from jsonl, parquet or plain-text files, endless, dealt
across the readers (data-parallel ranks x loader workers) so that no two read the same document."""
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
    """One reader's share of the text corpus, read as an endless sequence (it repeats when exhausted): of the
    documents from position `start` on, every `readers`-th, from the `reader`-th. Its state is (`start`,
    `consumed`: how many it has read); `position` is the next document's place in the whole sequence."""

    def __init__(self, paths: Sequence[str], reader: int = 0, readers: int = 1):
        self.paths, self.reader, self.readers = list(paths), reader, readers
        self.start, self.consumed, self._docs = 0, 0, None

    @property
    def position(self) -> int:
        return self.start + self.reader + self.consumed * self.readers

    def seek(self, consumed: int, start: int = 0) -> None:
        self.start, self.consumed, self._docs = start, consumed, None

    def next(self) -> str:
        if self._docs is None:
            self._docs = self._from(self.position)
        self.consumed += 1
        return next(self._docs)

    def _from(self, first: int) -> Iterator[str]:
        seen = 0
        while True:
            before = seen
            for doc in iter_text_corpus(self.paths):
                if seen >= first and (seen - first) % self.readers == 0:
                    yield doc
                seen += 1
            if seen == before:
                raise DataError(f"the text corpus {self.paths} holds no documents")
