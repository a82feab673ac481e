"""One micro-batch through the model: packed arrays -> tensors (+ Whisper features) -> losses."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from model.kimi_audio import LossTargets
from trainer.data.packing import PackedBatch
from trainer.data.tasks import TASKS


@dataclass
class StepLosses:
    loss: torch.Tensor            # what backward runs on
    audio: float
    text: float
    per_task: dict                # task -> (summed token loss, target tokens) over this micro-batch
    tokens: int                   # real (non-padding) positions
    audio_positions: int          # positions holding audio ids (discrete or continuous)


def whisper_features(model, batch: PackedBatch, frozen: bool) -> torch.Tensor | None:
    if not batch.clips:
        return None
    if model.whisper is None:
        raise ValueError("the data has continuous-audio positions but the model has no Whisper encoder "
                         "(set model.whisper to an HF Whisper folder)")
    with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
        return torch.cat(model.whisper(batch.clips))


def run_micro_batch(ddp_model, model, batch: PackedBatch, *, whisper_frozen: bool, normalisation: str,
                    audio_offset: int) -> StepLosses:
    """Forward with both heads' losses. `normalisation`: "head_mean" (each head's masked mean, summed, as
    the released fine-tuning code) or "token_mean" (all target tokens of both heads averaged together)."""
    device = next(model.parameters()).device
    t = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    targets = LossTargets(t(batch.audio_labels), t(batch.text_labels), t(batch.audio_loss_mask),
                          t(batch.text_loss_mask))
    out = ddp_model(t(batch.audio_ids), t(batch.text_ids), continuous_mask=t(batch.continuous),
                    whisper_features=whisper_features(model, batch, whisper_frozen),
                    position_ids=t(batch.position_ids), attention_mask=t(batch.attention_mask()), targets=targets)
    mask_a, mask_t = targets.audio_loss_mask.float(), targets.text_loss_mask.float()
    summed = out.audio_token_loss * mask_a + out.text_token_loss * mask_t
    if normalisation == "head_mean":
        loss = out.loss
    elif normalisation == "token_mean":
        loss = summed.sum() / (mask_a.sum() + mask_t.sum()).clamp(min=1.0)
    else:
        raise ValueError(f"loss normalisation {normalisation!r}: choose head_mean or token_mean")
    per_task = {}
    task_ids = torch.from_numpy(batch.task_ids).to(device)
    counts = mask_a + mask_t
    for index, task in enumerate(TASKS):
        where = task_ids == index
        n = float(counts[where].sum())
        if n:
            per_task[task] = (float(summed.detach()[where].sum()), n)
    real = batch.document_ids >= 0
    return StepLosses(loss=loss, audio=float(out.audio_loss), text=float(out.text_loss), per_task=per_task,
                      tokens=int(real.sum()), audio_positions=int(((batch.audio_ids >= audio_offset) & real).sum()))
