"""Which inputs a curation job reads: a directory (recursive), a glob, a list file, or one file/URL."""
from __future__ import annotations

import glob
import os
from typing import Mapping, Optional, Sequence

from pipeline.shards.storage import StorageError, glob_files, is_url, list_files, storage_for

LIST_SUFFIXES = (".txt", ".lst", ".list")


class InputError(Exception):
    pass


def list_inputs(spec: str, extensions: Sequence[str], storage_options: Optional[Mapping] = None) -> list[str]:
    """Sources in a stable order. A directory (or an object-store prefix) yields every entry whose name ends
    in one of `extensions` (a local directory named like a file is listed too, and fails alone later); a
    glob matches locally or on a store; a list file (local or a URL) holds one path or URL per line
    (# comments allowed); a URL to one object is that object."""
    wanted = tuple("." + e.lower().lstrip(".") for e in extensions)
    if is_url(spec):
        return list_remote_inputs(spec, wanted, storage_options)
    if os.path.isdir(spec):
        found = []
        for root, dirs, files in os.walk(spec):
            for name in sorted(dirs + files):
                if name.lower().endswith(wanted):
                    found.append(os.path.join(root, name))
            dirs[:] = [d for d in dirs if not d.lower().endswith(wanted)]
        return sorted(found)
    if any(ch in spec for ch in "*?["):
        return sorted(p for p in glob.glob(spec, recursive=True))
    if spec.lower().endswith(LIST_SUFFIXES) and os.path.isfile(spec):
        with open(spec, encoding="utf-8", errors="surrogateescape") as f:  # names are bytes
            return [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
    if os.path.exists(spec):
        return [spec]
    raise InputError(f"input {spec!r} is not a directory, glob, list file or existing file")


def list_remote_inputs(spec: str, wanted: tuple[str, ...], storage_options: Optional[Mapping]) -> list[str]:
    try:
        if any(ch in spec.split("://", 1)[1] for ch in "*?["):
            return glob_files(spec, storage_options)
        storage = storage_for(spec, storage_options)
        if spec.lower().endswith(LIST_SUFFIXES) and storage.is_file(storage.root):
            text = storage.read_bytes(storage.root).decode("utf-8", errors="surrogateescape")
            return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        if storage.is_file(storage.root):
            return [spec]
        found = list_files(spec, wanted, storage_options)
    except StorageError as e:
        raise InputError(str(e)) from None
    except OSError as e:  # credentials, endpoint, permissions: the backend's own words
        raise InputError(f"input {spec}: cannot list ({type(e).__name__}: {e})") from None
    if not found:
        raise InputError(f"input {spec}: no object under it ends in {', '.join(wanted)}")
    return found
