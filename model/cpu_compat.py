"""Running megatron-core 0.16 on CPU (tests, CI, laptops): applied only when CUDA is absent.

megatron-core assumes a GPU in a few places that matter here; each workaround answers one of them:
- the RNG-states tracker saves and restores *CUDA* generator states: a tracker on CPU generator states;
- attention's scratch buffer, rotary tables, gathers and barriers allocate on
  `torch.cuda.current_device()` and call `torch.cuda.synchronize()`: both answered for the CPU;
- the optimizer and the pipeline schedules hard-code `device='cuda'` and the optimizer checks
  `torch.cuda.FloatTensor`: `cuda_tensors_on_cpu()` remaps those around optimizer creation, its step and
  the forward-backward schedule, and gradient clipping (which asserts CUDA gradient types) is replaced by
  the same scaling on CPU tensors.
Nothing here runs when `torch.cuda.is_available()`.
"""
from __future__ import annotations

import contextlib

import torch

_applied = False


class CpuRNGStatesTracker:
    """megatron's `CudaRNGStatesTracker` interface on the CPU generator: named states to fork into."""

    def __init__(self, *args, **kwargs):
        self.reset()

    def reset(self):
        self.states_, self.seeds_ = {}, set()
        self._is_initialized = False

    def is_initialized(self):
        return self._is_initialized

    def get_states(self):
        return dict(self.states_)

    def set_states(self, states):
        self.states_, self._is_initialized = dict(states), True

    def add(self, name, seed):
        if seed in self.seeds_ or name in self.states_:
            raise RuntimeError(f"rng state {name} (seed {seed}) already exists")
        self.seeds_.add(seed)
        outer = torch.get_rng_state()
        torch.manual_seed(seed)
        self.states_[name] = torch.get_rng_state()
        torch.set_rng_state(outer)
        self._is_initialized = True

    @contextlib.contextmanager
    def fork(self, name="model-parallel-rng"):
        if name not in self.states_:
            raise RuntimeError(f"rng state {name} is not added")
        outer = torch.get_rng_state()
        torch.set_rng_state(self.states_[name])
        try:
            yield
        finally:
            self.states_[name] = torch.get_rng_state()
            torch.set_rng_state(outer)


def apply_cpu_compat() -> bool:
    """Install the CPU workarounds once, when there is no CUDA device; True when they are in place."""
    global _applied
    if torch.cuda.is_available():
        return False
    if not _applied:
        from megatron.core.tensor_parallel import random as mcore_random

        torch.cuda.current_device = lambda: "cpu"
        torch.cuda.synchronize = lambda *args, **kwargs: None
        mcore_random.CudaRNGStatesTracker = CpuRNGStatesTracker
        mcore_random.initialize_rng_tracker(force_reset=True)
        torch.cuda.manual_seed = torch.cuda.manual_seed_all = lambda seed: None  # CPU seeds come from torch.manual_seed
        from megatron.core.optimizer import optimizer as mcore_optimizer

        mcore_optimizer.clip_grad_by_total_norm_fp32 = clip_grad_by_total_norm_cpu
        _applied = True
    return True


def clip_grad_by_total_norm_cpu(parameters, max_norm, total_norm, use_decoupled_grad=False):
    """megatron's `clip_grad_by_total_norm_fp32` for CPU gradients: scale them by max_norm / total_norm."""
    coefficient = max_norm / (total_norm + 1.0e-6)
    if coefficient < 1.0:
        for p in parameters:
            grad = getattr(p, "decoupled_grad", None) if use_decoupled_grad else p.grad
            if grad is not None:
                grad.mul_(coefficient)


@contextlib.contextmanager
def cuda_tensors_on_cpu():
    """Around megatron code that allocates on `device='cuda'` (optimizer creation and `step()`, the
    forward-backward schedules): on CPU those tensors go to the CPU. Does nothing with CUDA."""
    if torch.cuda.is_available():
        yield
        return
    originals = {name: getattr(torch, name) for name in ("zeros", "empty", "tensor", "ones", "full")}

    def remap(fn):
        def call(*args, **kwargs):
            if str(kwargs.get("device", "")).startswith("cuda"):
                kwargs["device"] = "cpu"
            return fn(*args, **kwargs)
        return call

    float_tensor = getattr(torch.cuda, "FloatTensor", None)
    try:
        for name, fn in originals.items():
            setattr(torch, name, remap(fn))
        torch.cuda.FloatTensor = torch.FloatTensor
        yield
    finally:
        for name, fn in originals.items():
            setattr(torch, name, fn)
        if float_tensor is not None:
            torch.cuda.FloatTensor = float_tensor
