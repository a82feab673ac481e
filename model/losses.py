"""What the model's forward takes as targets and gives back, and the released code's loss normalisation.

Apart from `model.kimi_audio` (which imports megatron-core): the training step and the jobs that only
check a config use these without importing megatron-core.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import Tensor


@dataclass
class LossTargets:
    """Next-token targets of both heads, [batch, sequence]; masks say where each head's loss counts."""
    audio_labels: Tensor
    text_labels: Tensor
    audio_loss_mask: Tensor
    text_loss_mask: Tensor


@dataclass
class ModelOutput:
    audio_logits: Optional[Tensor] = None     # [B, S, vocab] (gathered over tensor-parallel ranks)
    text_logits: Optional[Tensor] = None
    audio_token_loss: Optional[Tensor] = None  # [B, S] cross-entropy per position (unmasked)
    text_token_loss: Optional[Tensor] = None
    audio_loss: Optional[Tensor] = None        # masked means, as the released fine-tuning code
    text_loss: Optional[Tensor] = None
    loss: Optional[Tensor] = None


def masked_mean(token_loss: Tensor, mask: Tensor) -> Tensor:
    """sum(loss * mask) / (sum(mask) + 1e-4): the released code's normalisation (facts B7)."""
    mask = mask.to(token_loss.dtype)
    return (token_loss * mask).sum() / (mask.sum() + 1e-4)
