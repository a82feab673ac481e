"""Which inputs a curation job reads: a directory (recursive), a glob, a list file, or one file/URL."""
from __future__ import annotations

import glob
import os
from typing import Sequence

LIST_SUFFIXES = (".txt", ".lst", ".list")


class InputError(Exception):
    pass


def list_inputs(spec: str, extensions: Sequence[str]) -> list[str]:
    """Sources in a stable order. A directory yields every entry whose name ends in one of `extensions`
    (a directory named like a file is listed too, and fails alone later); a list file holds one path or
    URL per line (# comments allowed)."""
    wanted = tuple("." + e.lower().lstrip(".") for e in extensions)
    if "://" in spec and not spec.startswith("file://"):
        return [spec]
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
