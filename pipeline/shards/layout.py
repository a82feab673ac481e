"""Where things live in a curated dataset directory, and atomic file writes."""
from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Optional, Sequence

DATASET_INFO = "dataset.json"
SHARDS_DIR = "shards"
MANIFEST_DIR = "manifest"
REJECTED_DIR = "rejected"
FAILED_DIR = "failed"
TEMP_PREFIX = ".tmp-"
# ShardWriter's names: {prefix}-{12 hex writer id}-{6 digit sequence}; only such tars are ever removed.
SHARD_NAME = re.compile(r"^[A-Za-z0-9_]+-[0-9a-f]{12}-[0-9]{6}$")


class DatasetError(Exception):
    """A problem with a dataset a user can act on; the CLI prints it without a traceback."""


@dataclass(frozen=True)
class DatasetLayout:
    """Paths of one dataset directory (DESIGN.md, 'The curated dataset on disk')."""
    root: Path

    @classmethod
    def of(cls, root: str | os.PathLike) -> "DatasetLayout":
        return cls(Path(root))

    @property
    def info(self) -> Path:
        return self.root / DATASET_INFO

    @property
    def shards(self) -> Path:
        return self.root / SHARDS_DIR

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST_DIR

    @property
    def rejected(self) -> Path:
        return self.root / REJECTED_DIR

    @property
    def failed(self) -> Path:
        return self.root / FAILED_DIR

    def shard_tar(self, name: str) -> Path:
        return self.shards / f"{name}.tar"

    def shard_manifest(self, name: str) -> Path:
        return self.manifest / f"{name}.parquet"

    def create(self) -> None:
        for d in (self.shards, self.manifest, self.rejected, self.failed):
            d.mkdir(parents=True, exist_ok=True)

    def require(self) -> "DatasetLayout":
        """Raise DatasetError unless this looks like a dataset (has a manifest dir or dataset.json)."""
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: no such dataset directory")
        if not (self.manifest.is_dir() or self.info.is_file()):
            raise DatasetError(f"{self.root}: not an audiomill dataset (no {MANIFEST_DIR}/ or {DATASET_INFO})")
        return self

    def is_ours(self) -> bool:
        """Whether dataset.json is an audiomill dataset's (the mark a job leaves before writing anything)."""
        try:
            info = json.loads(self.info.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(info, dict) and "schema_version" in info and "pipeline_version" in info

    def check_writable(self) -> None:
        """DatasetError unless the root is absent, an empty directory, or a dataset of ours: a job never
        writes into (or cleans up) a folder it does not own."""
        if not self.root.exists():
            return
        if not self.root.is_dir():
            raise DatasetError(f"output {self.root} exists and is not a directory")
        if self.is_ours():
            return
        if any(self.root.iterdir()):
            raise DatasetError(f"output {self.root} exists and is not an audiomill dataset (no {DATASET_INFO} of "
                               "ours): give a new or empty folder")

    def committed_shards(self) -> list[str]:
        """Names of committed shards: those with a manifest part, sorted."""
        if not self.manifest.is_dir():
            return []
        return sorted(p.stem for p in self.manifest.glob("*.parquet") if not p.name.startswith(TEMP_PREFIX))

    def select_shards(self, shards: Optional[Sequence[str]] = None) -> list[str]:
        """Committed shard names: all, or the named ones (DatasetError for a name not committed)."""
        names = self.committed_shards()
        if shards is None:
            return names
        unknown = sorted(set(shards) - set(names))
        if unknown:
            raise DatasetError(f"{self.root}: no committed shard named {', '.join(unknown)}")
        wanted = set(shards)
        return [n for n in names if n in wanted]

    def parts(self, directory: Path) -> list[Path]:
        if not directory.is_dir():
            return []
        return sorted(p for p in directory.glob("*.parquet") if not p.name.startswith(TEMP_PREFIX))

    def remove_orphans(self) -> list[Path]:
        """Delete leftovers of a crash: our temp files, and tars of our naming whose manifest was never written.

        Nothing else is touched: a file a user put there is not ours to delete. Call once at job start,
        before any writer of this job opens a shard: a concurrent writer's tar waits between its rename and
        its manifest's rename and would look like an orphan.
        """
        removed = []
        committed = set(self.committed_shards())
        for directory in (self.shards, self.manifest, self.rejected, self.failed):
            if directory.is_dir():
                for p in directory.glob(TEMP_PREFIX + "*"):
                    p.unlink(missing_ok=True)
                    removed.append(p)
        if self.shards.is_dir():
            for tar in self.shards.glob("*.tar"):
                if SHARD_NAME.match(tar.stem) and tar.stem not in committed:
                    tar.unlink(missing_ok=True)
                    removed.append(tar)
        return removed


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write `path` through a temp file in the same dir: write, fsync, rename, fsync the dir.

    Readers see either the old file or the whole new one, never a part.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX + path.name + ".", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp's 0600 would keep a team's dataset from the team
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))
