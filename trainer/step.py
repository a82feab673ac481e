"""One training (or evaluation) step: micro-batches through megatron's forward-backward schedule.

The same call serves every parallel layout: megatron picks the plain schedule without pipeline
parallelism and 1F1B across stages with it. Every stage reads the same micro-batches (the loader is
deterministic per data-parallel rank); the first stage embeds them (and runs Whisper), the last computes
the losses, and the step's figures are then broadcast from the last stage to the others.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.distributed as dist

from model.cpu_compat import cuda_tensors_on_cpu
from model.losses import LossTargets, ModelOutput
from trainer.data.packing import PackedBatch
from trainer.data.tasks import TASKS

NORMALISATIONS = ("head_mean", "token_mean")


@dataclass
class StepLosses:
    """One step's figures on this data-parallel rank, the same on every stage of its pipeline."""
    audio: float                  # mean over micro-batches of each head's masked mean loss
    text: float
    loss: float                   # mean over micro-batches of the loss backward ran on
    task_loss_sums: list          # per task, in TASKS order: summed token loss over the step's targets
    task_targets: list            # per task: the number of those targets
    tokens: int                   # real (non-padding) positions
    squared_lengths: int          # the samples' lengths squared, summed: what their attention costs
    audio_positions: int          # positions holding audio ids (discrete or continuous)


def collective_device() -> str:
    """Where tensors for collectives live: NCCL takes only CUDA tensors, gloo CPU ones."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def whisper_features(model, batch: PackedBatch, frozen: bool) -> torch.Tensor | None:
    if not batch.clips:
        return None
    if model.whisper is None:
        raise ValueError("the data has continuous-audio positions but the model has no Whisper encoder "
                         "(set model.whisper to an HF Whisper folder)")
    with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
        return torch.cat(model.whisper(batch.clips))


def batch_tensors(batch: PackedBatch, device) -> tuple[dict, LossTargets]:
    t = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    inputs = dict(audio_ids=t(batch.audio_ids), text_ids=t(batch.text_ids), continuous_mask=t(batch.continuous),
                  position_ids=t(batch.position_ids), document_ids=t(batch.document_ids))
    targets = LossTargets(t(batch.audio_labels), t(batch.text_labels), t(batch.audio_loss_mask),
                          t(batch.text_loss_mask))
    return inputs, targets


def micro_batch_loss(out: ModelOutput, targets: LossTargets, task_ids: torch.Tensor, normalisation: str):
    """(loss for backward, {"figures": [audio, text, loss, per-task sums..., per-task counts...]})."""
    mask_a, mask_t = targets.audio_loss_mask.float(), targets.text_loss_mask.float()
    summed = out.audio_token_loss * mask_a + out.text_token_loss * mask_t
    loss = out.loss if normalisation == "head_mean" else summed.sum() / (mask_a.sum() + mask_t.sum()).clamp(min=1.0)
    counts = mask_a + mask_t
    sums = [summed.detach()[task_ids == index].sum() for index in range(len(TASKS))]
    totals = [counts[task_ids == index].sum() for index in range(len(TASKS))]
    figures = torch.stack([out.audio_loss.detach(), out.text_loss.detach(), loss.detach(), *sums, *totals])
    return loss, {"figures": figures.double()}


def forward_backward(ddp_model, model, batches: list[PackedBatch], *, whisper_frozen: bool, normalisation: str,
                     audio_offset: int, forward_only: bool = False) -> StepLosses:
    """All micro-batches of one step through megatron's schedule; gradients accumulate in the DDP buffers
    (each micro-batch's loss divided by their number). `forward_only` for evaluation."""
    from megatron.core import parallel_state as ps
    from megatron.core.pipeline_parallel import get_forward_backward_func

    if normalisation not in NORMALISATIONS:
        raise ValueError(f"loss normalisation {normalisation!r}: choose one of {', '.join(NORMALISATIONS)}")
    device = next(model.parameters()).device

    def forward_step(data_iterator, chunk):
        batch = next(data_iterator)
        inputs, targets = batch_tensors(batch, device)
        if model.pre_process:
            inputs["whisper_features"] = whisper_features(model, batch, whisper_frozen)
        out = chunk(**inputs, targets=targets)
        task_ids = torch.from_numpy(batch.task_ids).to(device)
        return out, partial(micro_batch_loss, targets=targets, task_ids=task_ids, normalisation=normalisation)

    rows, seq_len = batches[0].audio_ids.shape
    seq_length, micro_batch_size = model.exchanged_shape(rows, seq_len)
    with cuda_tensors_on_cpu():
        reduced = get_forward_backward_func()(
            forward_step_func=forward_step, data_iterator=iter(batches), model=[ddp_model],
            num_microbatches=len(batches), seq_length=seq_length, micro_batch_size=micro_batch_size,
            forward_only=forward_only)
    n_tasks = len(TASKS)
    figures = torch.zeros(3 + 2 * n_tasks, dtype=torch.float64, device=collective_device())
    for item in reduced:  # the last stage's micro-batches; other stages get nothing
        figures += item["figures"].to(figures.device)
    if ps.get_pipeline_model_parallel_world_size() > 1:
        dist.broadcast(figures, src=ps.get_pipeline_model_parallel_last_rank(),
                       group=ps.get_pipeline_model_parallel_group())
    figures = figures.tolist()
    tokens = sum(int((b.document_ids >= 0).sum()) for b in batches)
    squared_lengths = sum(n * n for b in batches for n in b.sample_lengths)
    audio_positions = sum(int(((b.audio_ids >= audio_offset) & (b.document_ids >= 0)).sum()) for b in batches)
    audio, text, loss = (x / len(batches) for x in figures[:3])
    return StepLosses(audio=audio, text=text, loss=loss, task_loss_sums=figures[3:3 + n_tasks],
                      task_targets=figures[3 + n_tasks:], tokens=tokens, squared_lengths=squared_lengths,
                      audio_positions=audio_positions)
