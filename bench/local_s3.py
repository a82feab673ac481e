"""A local S3-compatible server (moto's standalone server) for the benchmarks and the tests.

Started as a user would start one (`moto_server -H 127.0.0.1 -p PORT`) and reached over HTTP through
s3fs, told only by the standard AWS_* environment: the code under test does not know it is local.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Optional


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalS3:
    endpoint: str
    bucket: str
    env: dict
    process: subprocess.Popen

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def start_local_s3(bucket: str, log: Optional[IO[bytes]] = None, timeout: float = 60.0) -> LocalS3:
    """Start the server on a free loopback port, point this process's AWS_* environment at it (its
    subprocesses inherit it), and create `bucket`."""
    port = free_port()
    process = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                               stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except OSError:
            if time.time() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError(f"moto_server did not come up on {endpoint}")
            time.sleep(0.2)
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
    os.environ.update(env)
    import s3fs

    s3fs.S3FileSystem().mkdir(bucket)
    return LocalS3(endpoint, bucket, env, process)


def upload_folder(folder: Path, url: str) -> str:
    """Every file under `folder` to `url` (an s3:// prefix), one PUT each; returns `url`."""
    import s3fs

    fs = s3fs.S3FileSystem()  # endpoint and credentials from the AWS_* environment
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        fs.put_file(str(path), f"{url}/{path.relative_to(folder).as_posix()}")
    return url
