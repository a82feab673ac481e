"""Where things live in a curated dataset (local or on object storage), and atomic local file writes."""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from typing import IO, Callable, Mapping, Optional, Sequence

from pipeline.shards.storage import TEMP_PREFIX, LocalStorage, Storage, storage_for

DATASET_INFO = "dataset.json"
SHARDS_DIR = "shards"
MANIFEST_DIR = "manifest"
REJECTED_DIR = "rejected"
FAILED_DIR = "failed"
# ShardWriter's names: {prefix}-{12 hex writer id}-{6 digit sequence}; only such tars are ever removed.
SHARD_NAME = re.compile(r"^[A-Za-z0-9_]+-[0-9a-f]{12}-[0-9]{6}$")


class DatasetError(Exception):
    """A problem with a dataset a user can act on; the CLI prints it without a traceback."""


@dataclass(frozen=True)
class DatasetLayout:
    """Where things live in one dataset (DESIGN.md, 'The curated dataset on disk'), on any storage.

    Paths are strings on `storage` (local paths, or bucket/key paths of an object store); `storage.show`
    turns one back into what a user would type.
    """
    storage: Storage

    @classmethod
    def of(cls, root: str | os.PathLike, storage_options: Optional[Mapping] = None) -> "DatasetLayout":
        return cls(storage_for(os.fspath(root), storage_options))

    @property
    def root(self) -> str:
        return self.storage.root

    @property
    def url(self) -> str:
        return self.storage.url

    def _sub(self, name: str) -> str:
        return self.storage.join(self.root, name)

    @property
    def info(self) -> str:
        return self._sub(DATASET_INFO)

    @property
    def shards(self) -> str:
        return self._sub(SHARDS_DIR)

    @property
    def manifest(self) -> str:
        return self._sub(MANIFEST_DIR)

    @property
    def rejected(self) -> str:
        return self._sub(REJECTED_DIR)

    @property
    def failed(self) -> str:
        return self._sub(FAILED_DIR)

    def shard_tar(self, name: str) -> str:
        return self.storage.join(self.shards, f"{name}.tar")

    def shard_manifest(self, name: str) -> str:
        return self.storage.join(self.manifest, f"{name}.parquet")

    def part(self, directory: str, name: str) -> str:
        return self.storage.join(directory, name)

    def create(self) -> None:
        for d in (self.shards, self.manifest, self.rejected, self.failed):
            self.storage.makedirs(d)

    def require(self) -> "DatasetLayout":
        """Raise DatasetError unless this looks like a dataset (has a manifest dir or dataset.json)."""
        if not self.storage.is_dir(self.root):
            raise DatasetError(f"{self.url}: no such dataset directory")
        if not (self.storage.is_dir(self.manifest) or self.storage.is_file(self.info)):
            raise DatasetError(f"{self.url}: not an audiomill dataset (no {MANIFEST_DIR}/ or {DATASET_INFO})")
        return self

    def read_info(self) -> Optional[dict]:
        """dataset.json, or None when absent or not JSON."""
        try:
            info = json.loads(self.storage.read_bytes(self.info).decode("utf-8"))
        except (OSError, ValueError):
            return None
        return info if isinstance(info, dict) else None

    def is_ours(self) -> bool:
        """Whether dataset.json is an audiomill dataset's (the mark a job leaves before writing anything)."""
        info = self.read_info()
        return info is not None and "schema_version" in info and "pipeline_version" in info

    def check_writable(self) -> None:
        """DatasetError unless the root is absent, an empty directory, or a dataset of ours: a job never
        writes into (or cleans up) a folder it does not own."""
        storage = self.storage
        if not storage.exists(self.root):
            return
        if storage.is_file(self.root):
            raise DatasetError(f"output {self.url} exists and is not a directory")
        if self.is_ours():
            return
        if storage.has_entries(self.root):
            raise DatasetError(f"output {self.url} exists and is not an audiomill dataset (no {DATASET_INFO} of "
                               "ours): give a new or empty folder")

    def committed_shards(self) -> list[str]:
        """Names of committed shards: those with a manifest part, sorted."""
        return [os.path.splitext(n)[0] for n in self.part_names(self.manifest)]

    def select_shards(self, shards: Optional[Sequence[str]] = None) -> list[str]:
        """Committed shard names: all, or the named ones (DatasetError for a name not committed)."""
        names = self.committed_shards()
        if shards is None:
            return names
        unknown = sorted(set(shards) - set(names))
        if unknown:
            raise DatasetError(f"{self.url}: no committed shard named {', '.join(unknown)}")
        wanted = set(shards)
        return [n for n in names if n in wanted]

    def part_names(self, directory: str) -> list[str]:
        return [n for n in self.storage.list_names(directory)
                if n.endswith(".parquet") and not n.startswith(TEMP_PREFIX)]

    def parts(self, directory: str) -> list[str]:
        return [self.storage.join(directory, n) for n in self.part_names(directory)]

    def orphans(self, min_age_seconds: float = 0.0) -> list[str]:
        """Leftovers of a crash: our temp files, and tars of our naming that no manifest commits, at least
        `min_age_seconds` old. Nothing else: a file a user put there is not ours to delete."""
        storage, now = self.storage, time.time()
        committed = set(self.committed_shards())
        found = [storage.join(d, n) for d in (self.shards, self.manifest, self.rejected, self.failed)
                 for n in storage.list_names(d) if n.startswith(TEMP_PREFIX)]
        for name in storage.list_names(self.shards):
            stem, ext = os.path.splitext(name)
            if ext == ".tar" and SHARD_NAME.match(stem) and stem not in committed:
                found.append(storage.join(self.shards, name))
        if min_age_seconds > 0:
            found = [p for p in found if now - storage.modified(p) >= min_age_seconds]
        return sorted(found)

    def remove_orphans(self) -> list[str]:
        """Delete `orphans()`. Call once at job start, before any writer of this job opens a shard (or
        through `audiomill-shards gc` with a grace period): a live writer's tar waits between its upload
        and its manifest's and would look like an orphan."""
        removed = self.orphans()
        for path in removed:
            self.storage.remove(path)
        return removed


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Write a local file atomically: temp file in the same dir, fsync, rename, fsync the dir.

    Readers see either the old file or the whole new one, never a part."""
    LocalStorage(os.fspath(path)).write_atomic(os.fspath(path), write)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))
