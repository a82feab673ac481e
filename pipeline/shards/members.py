"""Reading shard members without trusting the tar: names, types and sizes are checked before any byte is read.

A tar can claim anything: a GNU sparse member of 1.5 MB on disk reads as 6 GiB, a symlink points
anywhere, a name can hold `../`. Every reader of a dataset (the sample reader, `verify`, `show`,
`export`, the trainer) reads members through `iter_members`, which refuses every member type but a
regular file, every name its manifest does not promise, and every member larger than its limit:
the sample's `size_bytes` from its manifest row (all members of a sample together), and never more
than `MAX_MEMBER_BYTES`. A refused member's data is skipped on disk, never read into memory.
"""
from __future__ import annotations

import tarfile
from dataclasses import dataclass
from typing import IO, Iterator, Mapping, Optional

from pipeline.shards.layout import DatasetError
from pipeline.shards.manifest import expected_members

# A ceiling whatever a manifest says: two hours of 16 kHz 16-bit audio, far above any curated segment.
MAX_MEMBER_BYTES = 256 << 20

_REGULAR_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE)


@dataclass(frozen=True)
class Member:
    """One member: its bytes, or why it was refused (then `data` is None)."""
    name: str
    data: Optional[bytes] = None
    problem: Optional[str] = None


# The limit of a member whose sample is a superseded duplicate (manifest.duplicate_owners): passed over unread.
SKIP = -1


def member_limits(rows: list[dict], superseded: list[dict] = ()) -> dict[str, int]:
    """Largest size each promised member may have: its sample's `size_bytes`, capped by the ceiling;
    members of `superseded` rows map to SKIP."""
    limits = {}
    for row in superseded:
        for name in expected_members(row):
            limits[name] = SKIP
    for row in rows:
        limit = min(int(row["size_bytes"] or 0), MAX_MEMBER_BYTES)
        for name in expected_members(row):
            limits[name] = limit
    return limits


def member_problem(info: tarfile.TarInfo, limits: Mapping[str, int]) -> Optional[str]:
    """Why a member must not be read (None: read it); `limits` maps each promised name to its largest size."""
    if info.type not in _REGULAR_TYPES or info.issparse():
        kind = "sparse file" if info.issparse() else {
            tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hard link", tarfile.DIRTYPE: "directory",
            tarfile.CHRTYPE: "character device", tarfile.BLKTYPE: "block device", tarfile.FIFOTYPE: "fifo",
        }.get(info.type, f"type {info.type!r}")
        return f"member {info.name!r} is a {kind}, not a regular file (refused)"
    if info.name not in limits:
        return f"member {info.name!r} is not in the manifest"
    limit = limits[info.name]
    if info.size > limit:
        return f"member {info.name!r} holds {info.size} bytes, more than its limit of {limit}"
    return None


def iter_members(source: str | IO[bytes], limits: Mapping[str, int]) -> Iterator[Member]:
    """Every member of a tar in order, read or refused (SKIP ones passed over); tarfile.TarError or
    EOFError when the tar is damaged.

    `source` is a path or a binary file object (read as a stream, never seeked)."""
    opened = tarfile.open(source, mode="r|") if isinstance(source, str) else tarfile.open(fileobj=source, mode="r|")
    with opened as tar:
        for info in tar:
            if limits.get(info.name) == SKIP:
                tar.members = []
                continue
            problem = member_problem(info, limits)
            if problem is not None:
                yield Member(info.name, problem=problem)
            else:
                yield Member(info.name, data=tar.extractfile(info).read())
            tar.members = []  # a stream of a million members must not keep a million TarInfos


def read_one_member(source: IO[bytes], name: str, limits: Mapping[str, int], shown: str) -> bytes:
    """The bytes of one member of an opened tar stream, found by exact name (DatasetError naming `shown`
    when absent, refused or damaged)."""
    path = shown
    try:
        with tarfile.open(fileobj=source, mode="r|") as tar:
            for info in tar:
                if info.name == name:
                    problem = member_problem(info, limits)
                    if problem is not None:
                        raise DatasetError(f"{path}: {problem}")
                    return tar.extractfile(info).read()
                tar.members = []
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DatasetError(f"{path}: tar is truncated or unreadable ({e})") from None
    raise DatasetError(f"{path} has no member {name}")
