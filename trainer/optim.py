"""megatron-core's data-parallel wrapper, optimizer and learning-rate schedule, from the run config.

AdamW with a cosine schedule from `lr` to `min_lr` after a linear warmup (report §4.1.4: 2e-5 -> 2e-6,
1% warmup). Whisper sits in its own parameter groups so it can be frozen for the first part of
training (report: ~20% of tokens) without leaving the optimizer: while frozen, its groups' learning
rate and weight decay are set to 0 right before each optimizer step (the scheduler sets them anew after
it), and the features are computed without gradients. The groups are told apart by megatron's
`is_decoupled_lr` flag, one of the keys it matches groups by when a checkpoint is loaded.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from model.cpu_compat import cuda_tensors_on_cpu


@dataclass(frozen=True)
class OptimSettings:
    """The `optim` section: AdamW (`beta1`, `beta2`, `eps`, `weight_decay`) on a cosine schedule from `lr` to
    `min_lr` after a linear warmup over `warmup_fraction` of the steps; gradients clipped to `clip_grad`.
    Defaults: the report's pretraining (§4.1.4)."""
    lr: float = 2e-5
    min_lr: float = 2e-6
    warmup_fraction: float = 0.01
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    clip_grad: float = 1.0

    def problems(self) -> list[str]:
        problems = []
        if not 0 <= self.min_lr <= self.lr:
            problems.append(f"optim: need 0 <= min_lr <= lr (min_lr={self.min_lr:g}, lr={self.lr:g})")
        if not 0 <= self.warmup_fraction <= 1:
            problems.append(f"optim.warmup_fraction={self.warmup_fraction:g} must be in [0, 1]")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1) or self.eps <= 0 or self.weight_decay < 0:
            problems.append("optim: need betas in [0, 1), eps > 0 and weight_decay >= 0")
        if self.clip_grad < 0:
            problems.append(f"optim.clip_grad={self.clip_grad:g} must be >= 0 (0: no clipping)")
        return problems


@dataclass
class TrainingState:
    ddp_model: object
    optimizer: object
    scheduler: object
    whisper_groups: list


def wrap_ddp(model):
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig

    ddp_config = DistributedDataParallelConfig(grad_reduce_in_fp32=True, overlap_grad_reduce=False,
                                               use_distributed_optimizer=torch.cuda.is_available())
    return DistributedDataParallel(config=model.config, ddp_config=ddp_config, module=model)


def build_training(model, optim: OptimSettings, total_steps: int) -> TrainingState:
    from megatron.core.optimizer import (
        OptimizerConfig, ParamGroupOverride, ParamKey, get_megatron_optimizer, get_standard_config_overrides,
    )
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    ddp_model = wrap_ddp(model)
    config = OptimizerConfig(optimizer="adam", lr=optim.lr, min_lr=optim.min_lr, weight_decay=optim.weight_decay,
                             adam_beta1=optim.beta1, adam_beta2=optim.beta2, adam_eps=optim.eps,
                             clip_grad=optim.clip_grad, bf16=model.cfg.params_dtype == "bfloat16",
                             use_distributed_optimizer=torch.cuda.is_available())
    overrides = get_standard_config_overrides(config)
    overrides[ParamKey(name="*whisper.*")] = ParamGroupOverride(is_decoupled_lr=True)  # its own groups
    with cuda_tensors_on_cpu():
        optimizer = get_megatron_optimizer(config, [ddp_model], config_overrides=overrides)
    warmup = int(round(optim.warmup_fraction * total_steps))
    scheduler = OptimizerParamScheduler(
        optimizer, init_lr=0.0, max_lr=optim.lr, min_lr=optim.min_lr, lr_warmup_steps=warmup,
        lr_decay_steps=max(total_steps, warmup + 1), lr_decay_style="cosine", start_wd=optim.weight_decay,
        end_wd=optim.weight_decay, wd_incr_steps=total_steps, wd_incr_style="constant")
    # Whisper's groups are the decoupled ones: a mixed-precision or distributed optimizer's groups hold
    # float32 masters (shards), never the model's own parameters
    groups = [g for g in optimizer.param_groups if g.get("is_decoupled_lr")]
    return TrainingState(ddp_model, optimizer, scheduler, groups)


def freeze_whisper_for_this_step(state: TrainingState) -> None:
    """Call right before `optimizer.step()`: Whisper's groups neither learn nor decay in this step."""
    for group in state.whisper_groups:
        group["lr"], group["weight_decay"] = 0.0, 0.0
