"""Process groups for megatron-core: under torchrun (env://) or a single local process, GPU or CPU."""
from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import sys
import tempfile

import torch
import torch.distributed as dist

from model.cpu_compat import apply_cpu_compat

_GLOO_CONNECTED = b"[Gloo] Rank "


@contextlib.contextmanager
def without_gloo_connection_lines():
    """gloo prints `[Gloo] Rank r is connected to n peer ranks` to stdout from C++ for every process group
    (megatron makes dozens), and no log level reaches it: the block runs with fd 1 on a temp file, and
    every other line is passed on afterwards."""
    sys.stdout.flush()
    libc = ctypes.CDLL(None)
    saved = os.dup(1)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            libc.fflush(None)  # C++ streams buffer in C stdio: out to the temp file before fd 1 is restored
            os.dup2(saved, 1)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().splitlines(keepends=True) if not line.startswith(_GLOO_CONNECTED)]
            sys.stdout.write(b"".join(kept).decode(errors="replace"))
            sys.stdout.flush()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_parallel(tensor_parallel: int = 1, pipeline_parallel: int = 1, seed: int = 1234) -> None:
    """torch.distributed (nccl on GPU, gloo on CPU), megatron's parallel groups and RNG tracker.

    Without torchrun's environment it starts a one-process group on localhost, so conversion scripts
    and tests run as plain Python.
    """
    from megatron.core import tensor_parallel as mcore_tp

    on_cpu = apply_cpu_compat()
    with without_gloo_connection_lines():
        _init_groups(tensor_parallel, pipeline_parallel, on_cpu)
    torch.manual_seed(seed)
    mcore_tp.model_parallel_cuda_manual_seed(seed)


def _init_groups(tensor_parallel: int, pipeline_parallel: int, on_cpu: bool) -> None:
    from megatron.core import parallel_state

    if not dist.is_initialized():
        if not on_cpu:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "gloo" if on_cpu else "nccl"
        if "RANK" in os.environ:
            dist.init_process_group(backend=backend)
        else:  # not exported to os.environ: child processes (torchrun, jobs) must not inherit it
            dist.init_process_group(backend=backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0,
                                    world_size=1)
    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(tensor_model_parallel_size=tensor_parallel,
                                             pipeline_model_parallel_size=pipeline_parallel)


def is_rank0() -> bool:
    """True in the process that writes shared files: global rank 0, or a process without a group."""
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shutdown_parallel() -> None:
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()
