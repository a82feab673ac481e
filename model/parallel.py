"""Process groups for megatron-core: under torchrun (env://) or a single local process, GPU or CPU."""
from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist

from model.cpu_compat import apply_cpu_compat


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_parallel(tensor_parallel: int = 1, pipeline_parallel: int = 1, seed: int = 1234) -> None:
    """torch.distributed (nccl on GPU, gloo on CPU), megatron's parallel groups and RNG tracker.

    Without torchrun's environment it starts a one-process group on localhost, so conversion scripts
    and tests run as plain Python.
    """
    from megatron.core import parallel_state, tensor_parallel as mcore_tp

    on_cpu = apply_cpu_compat()
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
    torch.manual_seed(seed)
    mcore_tp.model_parallel_cuda_manual_seed(seed)


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
