"""Where a dataset's bytes live: a local directory or any fsspec URL (s3://, gs://, az://, ...), one small API.

Everything on a dataset's path (writer, manifests, reader, verify, the CLI, the trainer) goes through
`Storage`, so the layout is the same on every backend. The two backends differ only in how a write
becomes visible:
- local: a temp file in the same directory, fsync, rename, fsync of the directory (readers see the old
  file or the whole new one);
- object stores: no rename exists, but one PUT (or a completed multipart upload) is atomic, so the file
  is staged in a local temp file and uploaded under its final name in one go.

Credentials and endpoints come the way fsspec's backends take them: environment (`AWS_*`,
`AWS_ENDPOINT_URL`, `GOOGLE_APPLICATION_CREDENTIALS`, ...), their config files, or per protocol in
`storage_options` (`{"s3": {"endpoint_url": ..., "key": ..., "secret": ...}}`).
"""
from __future__ import annotations

import contextlib
import fnmatch
import functools
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from typing import IO, Callable, Iterator, Mapping, Optional

TEMP_PREFIX = ".tmp-"
# node-local staging: an object being uploaded, a remote input being decoded
UPLOAD_PREFIX, INPUT_PREFIX = "audiomill-upload-", "audiomill-input-"


class StorageError(Exception):
    """A storage URL that cannot be used (no backend for its protocol, bad options)."""


def is_url(spec: str) -> bool:
    """Whether `spec` names an fsspec URL other than a plain local path."""
    return "://" in spec and not spec.startswith("file://")


def protocol_of(url: str) -> str:
    return url.split("://", 1)[0] if is_url(url) else "file"


def local_path(spec: str) -> str:
    return spec[len("file://"):] if spec.startswith("file://") else spec


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Storage(ABC):
    """One filesystem and a root on it. Paths are plain strings on that filesystem (`join` builds them,
    `show` turns one back into what a user would type)."""

    url: str   # the root as the user gave it, for messages
    root: str  # the root as this filesystem's path

    @abstractmethod
    def join(self, *parts: str) -> str: ...

    def show(self, path: str) -> str:
        return path

    @abstractmethod
    def exists(self, path: str) -> bool: ...

    @abstractmethod
    def is_file(self, path: str) -> bool: ...

    @abstractmethod
    def is_dir(self, path: str) -> bool: ...

    @abstractmethod
    def has_entries(self, directory: str) -> bool: ...

    @abstractmethod
    def size(self, path: str) -> int: ...

    @abstractmethod
    def modified(self, path: str) -> float:
        """Seconds since the epoch of the last write."""

    @abstractmethod
    def list_names(self, directory: str) -> list[str]:
        """Names of the files directly in `directory`, sorted (empty when it does not exist)."""

    @abstractmethod
    def open_read(self, path: str) -> IO[bytes]: ...

    def read_bytes(self, path: str) -> bytes:
        with self.open_read(path) as f:
            return f.read()

    @abstractmethod
    def makedirs(self, directory: str) -> None: ...

    @abstractmethod
    def remove(self, path: str) -> None:
        """Delete a file; a missing one is not an error."""

    @abstractmethod
    def open_atomic(self, path: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        """A binary file that becomes `path`, whole, when the block ends without an exception."""

    def write_atomic(self, path: str, write: Callable[[IO[bytes]], None]) -> None:
        with self.open_atomic(path) as f:
            write(f)

    def write_bytes(self, path: str, data: bytes) -> None:
        self.write_atomic(path, lambda f: f.write(data))


class LocalStorage(Storage):
    def __init__(self, root: str):
        self.url = root
        self.root = local_path(root)

    def join(self, *parts: str) -> str:
        return os.path.join(*parts)

    def exists(self, path: str) -> bool:
        return os.path.lexists(path)

    def is_file(self, path: str) -> bool:
        return os.path.isfile(path)

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(path)

    def size(self, path: str) -> int:
        return os.path.getsize(path)

    def modified(self, path: str) -> float:
        return os.path.getmtime(path)

    def has_entries(self, directory: str) -> bool:
        try:
            with os.scandir(directory) as entries:
                return any(True for _ in entries)
        except (FileNotFoundError, NotADirectoryError):
            return False

    def list_names(self, directory: str) -> list[str]:
        try:
            return sorted(e.name for e in os.scandir(directory) if not e.is_dir())
        except (FileNotFoundError, NotADirectoryError):
            return []

    def open_read(self, path: str) -> IO[bytes]:
        return open(path, "rb")

    def makedirs(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)

    def remove(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    @contextlib.contextmanager
    def open_atomic(self, path: str) -> Iterator[IO[bytes]]:
        parent = os.path.dirname(path) or "."
        os.makedirs(parent, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX + os.path.basename(path) + ".", dir=parent)
        try:
            os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp's 0600 would keep a team's dataset from the team
            with os.fdopen(fd, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        fsync_dir(parent)


class ObjectStorage(Storage):
    """Any fsspec filesystem without rename semantics we rely on: staged locally, uploaded in one PUT."""

    def __init__(self, url: str, options: Optional[Mapping] = None):
        import fsspec

        self.url = url
        self.protocol = protocol_of(url)
        try:
            self.fs = fsspec.filesystem(self.protocol, **dict(options or {}))
        except (ImportError, ValueError) as e:
            raise StorageError(f"{url}: no filesystem for {self.protocol}:// ({e}); install its fsspec "
                               f"backend (s3fs, gcsfs, adlfs, ...)") from None
        self.root = self.fs._strip_protocol(url).rstrip("/")

    def join(self, *parts: str) -> str:
        return "/".join(p.strip("/") if i else p.rstrip("/") for i, p in enumerate(parts))

    def show(self, path: str) -> str:
        return f"{self.protocol}://{path}"

    def _info(self, path: str) -> Optional[dict]:
        try:
            return self.fs.info(path, refresh=True)  # fsspec backends take (and may ignore) keyword options
        except FileNotFoundError:
            return None

    def exists(self, path: str) -> bool:
        return self._info(path) is not None or self.is_dir(path)

    def is_file(self, path: str) -> bool:
        info = self._info(path)
        return info is not None and info.get("type") == "file"

    def is_dir(self, path: str) -> bool:
        try:
            entries = self.fs.ls(path, detail=False, refresh=True)
        except (FileNotFoundError, NotADirectoryError):
            return False
        return any(e.rstrip("/") != path.rstrip("/") for e in entries)  # a file lists as itself

    def has_entries(self, directory: str) -> bool:
        return self.is_dir(directory)

    def size(self, path: str) -> int:
        info = self._info(path)
        if info is None:
            raise FileNotFoundError(self.show(path))
        return int(info["size"])

    def modified(self, path: str) -> float:
        return self.fs.modified(path).timestamp()

    def list_names(self, directory: str) -> list[str]:
        try:
            entries = self.fs.ls(directory, detail=True, refresh=True)  # never a stale listing cache
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") == "file")

    def open_read(self, path: str) -> IO[bytes]:
        return self.fs.open(path, "rb")

    def makedirs(self, directory: str) -> None:
        pass  # object stores have prefixes, not directories

    def remove(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(path)

    @contextlib.contextmanager
    def open_atomic(self, path: str) -> Iterator[IO[bytes]]:
        with tempfile.TemporaryDirectory(prefix=staging_prefix(UPLOAD_PREFIX)) as staging:
            local = os.path.join(staging, "part")
            with open(local, "wb") as f:
                yield f
            self.fs.put_file(local, path)  # one PUT (multipart completes atomically): never seen half-written


def storage_for(url: str, options: Optional[Mapping] = None) -> Storage:
    """The storage a URL (or local path) lives on; `options` maps protocol -> fsspec keyword arguments."""
    url = os.fspath(url)
    if not is_url(url):
        return LocalStorage(url)
    per_protocol = dict((options or {}).get(protocol_of(url)) or {})
    return ObjectStorage(url, per_protocol)


def list_files(url: str, suffixes: tuple[str, ...], options: Optional[Mapping] = None) -> list[str]:
    """URLs of every object under a prefix whose name ends in one of `suffixes` (case-insensitive)."""
    storage = _object_storage(url, options)
    return sorted(storage.show(p) for p in storage.fs.find(storage.root) if p.lower().endswith(suffixes))


def glob_files(url: str, options: Optional[Mapping] = None) -> list[str]:
    """URLs of every object matching a glob (`*`, `?`, `[...]`; `*` also crosses `/`)."""
    storage = _object_storage(url, options)
    pattern = storage.root
    base = pattern.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0].rsplit("/", 1)[0]
    return sorted(storage.show(p) for p in storage.fs.find(base) if fnmatch.fnmatchcase(p, pattern))


def _object_storage(url: str, options: Optional[Mapping]) -> "ObjectStorage":
    storage = storage_for(url, options)
    if not isinstance(storage, ObjectStorage):
        raise StorageError(f"{url} is not an object-store URL")
    storage.fs.invalidate_cache()  # a listing must see what other processes wrote since
    return storage


def download_to_temp(url: str, options: Optional[Mapping] = None, chunk_bytes: int = 8 << 20) -> str:
    """Stream an object to a local temp file (memory: one chunk) and return its path; the caller removes it."""
    storage = storage_for(url, options)
    fd, path = tempfile.mkstemp(prefix=staging_prefix(INPUT_PREFIX), suffix=os.path.splitext(url)[1][:16])
    try:
        with os.fdopen(fd, "wb") as out, storage.open_read(storage.root) as src:
            shutil.copyfileobj(src, out, chunk_bytes)
    except BaseException:
        os.unlink(path)
        raise
    return path


def staging_prefix(kind: str) -> str:
    """`kind` + this process's PID namespace and PID: whose staging it is, once the process is gone. The
    first call in a process removes what processes that died (SIGKILL, the OOM killer) left."""
    _remove_dead_staging_once()
    return f"{kind}{_pid_namespace()}-{os.getpid()}-"


@functools.cache
def _remove_dead_staging_once() -> None:
    remove_staging_of_dead_processes(tempfile.gettempdir())


def remove_staging_of_dead_processes(tempdir: str) -> list[str]:
    """Remove the node-local staging (upload parts, input copies, up to a shard or a whole recording each)
    of processes of this PID namespace that no longer run, so killed workers do not fill a node's temp
    disk; returns what was removed. Another namespace's (a container sharing the disk) is not ours to judge."""
    namespace, removed = _pid_namespace(), []
    for entry in os.scandir(tempdir):
        kind = next((k for k in (UPLOAD_PREFIX, INPUT_PREFIX) if entry.name.startswith(k)), None)
        owner = entry.name[len(kind):].split("-", 2) if kind else []
        if len(owner) < 3 or owner[0] != namespace or not owner[1].isdigit() or _running(int(owner[1])):
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
        removed.append(entry.path)
    return removed


def _pid_namespace() -> str:
    try:
        return "".join(c for c in os.readlink("/proc/self/ns/pid") if c.isdigit())  # "pid:[4026531836]"
    except OSError:
        return "0"  # no /proc (macOS): one namespace


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # PermissionError: it runs, as another user
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True
