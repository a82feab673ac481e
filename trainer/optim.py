"""megatron-core's data-parallel wrapper, optimizer and learning-rate schedule, from the run config.

AdamW with a cosine schedule from `lr` to `min_lr` after a linear warmup (report §4.1.4: 2e-5 -> 2e-6,
1% warmup). Whisper sits in its own parameter groups so it can be frozen for the first part of
training (report: ~20% of tokens) without leaving the optimizer: while frozen its groups get learning
rate and weight decay 0 (and the features are computed without gradients).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from model.cpu_compat import optimizer_on_cpu


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


def build_training(model, optim: DictConfig, total_steps: int) -> TrainingState:
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
    overrides[ParamKey(name="*whisper.*")] = ParamGroupOverride(max_lr=optim.lr)  # its own groups
    with optimizer_on_cpu():
        optimizer = get_megatron_optimizer(config, [ddp_model], config_overrides=overrides)
    warmup = int(round(optim.warmup_fraction * total_steps))
    scheduler = OptimizerParamScheduler(
        optimizer, init_lr=0.0, max_lr=optim.lr, min_lr=optim.min_lr, lr_warmup_steps=warmup,
        lr_decay_steps=max(total_steps, warmup + 1), lr_decay_style="cosine", start_wd=optim.weight_decay,
        end_wd=optim.weight_decay, wd_incr_steps=total_steps, wd_incr_style="constant")
    whisper_params = {id(p) for name, p in model.named_parameters() if name.startswith("whisper.")}
    groups = [g for g in optimizer.param_groups if any(id(p) in whisper_params for p in g["params"])]
    for group in groups:
        group["unfrozen_wd_mult"] = group["wd_mult"]
    return TrainingState(ddp_model, optimizer, scheduler, groups)


def set_whisper_frozen(state: TrainingState, frozen: bool, lr: float, min_lr: float) -> None:
    for group in state.whisper_groups:
        group["max_lr"], group["min_lr"] = (0.0, 0.0) if frozen else (lr, min_lr)
        group["wd_mult"] = 0.0 if frozen else group["unfrozen_wd_mult"]
