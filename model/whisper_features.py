"""Continuous audio features for the model: Whisper-large-v3 encoder outputs stacked 4 -> 1 (facts B3).

Each 30 s chunk is padded (or trimmed) to 30 s, turned into Whisper's log-mel [128, 3000], encoded,
taken after the final layer norm ([1500, d]), cut to `4 * token_count` frames, and stacked four frames
at a time ([token_count, 4 * d], 5120 for large-v3). Feature frames and semantic tokens line up one to one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from model.hf_folder import load_exact, read_config, read_state_dict, resolve_model_folder, strip_prefix
from model.log_mel import CHUNK_SAMPLES, log_mel_spectrogram, split_chunks
from model.semantic_tokenizer import SAMPLES_PER_TOKEN

FRAMES_PER_TOKEN = 4  # 50 Hz encoder frames per 12.5 Hz token


def load_whisper_encoder(folder: str | Path):
    """transformers' `WhisperEncoder` from an HF Whisper folder (`encoder.*` or `model.encoder.*` keys)."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    folder = resolve_model_folder(folder)
    raw = read_config(folder)
    config = WhisperConfig(**{k: v for k, v in raw.items() if k not in ("architectures", "model_type")})
    config._attn_implementation = "sdpa"
    encoder = WhisperEncoder(config)
    state = strip_prefix(read_state_dict(folder), ["model.encoder.", "encoder."])
    load_exact(encoder, state, folder, ignore=("decoder.", "model.decoder.", "proj_out."))
    return encoder


class WhisperFeatureEncoder(nn.Module):
    """Audio clips -> [tokens, 4 * d_model] features; `trainable=False` freezes the encoder."""

    def __init__(self, encoder: nn.Module, trainable: bool = False):
        super().__init__()
        self.encoder = encoder
        self.set_trainable(trainable)

    @classmethod
    def from_folder(cls, folder: str | Path, trainable: bool = False) -> "WhisperFeatureEncoder":
        return cls(load_whisper_encoder(folder), trainable=trainable)

    @property
    def output_dim(self) -> int:
        return FRAMES_PER_TOKEN * self.encoder.config.d_model

    def set_trainable(self, trainable: bool) -> None:
        """Freeze or unfreeze (the report freezes Whisper for the first 20% of pretraining tokens)."""
        self.trainable = trainable
        self.encoder.requires_grad_(trainable)
        # the sinusoidal position table stays frozen, as in transformers
        self.encoder.embed_positions.requires_grad_(False)

    def log_mel(self, chunks: Sequence[np.ndarray]) -> torch.Tensor:
        """[B, n_mels, 3000] for chunks of at most 30 s, each zero-padded to exactly 30 s."""
        device = next(self.encoder.parameters()).device
        audio = torch.zeros(len(chunks), CHUNK_SAMPLES, device=device)
        for row, chunk in enumerate(chunks):
            audio[row, : len(chunk)] = torch.as_tensor(np.asarray(chunk, dtype=np.float32), device=device)
        return log_mel_spectrogram(audio, self.encoder.config.num_mel_bins)

    def encode_chunks(self, chunks: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """One [token_count, 4 * d] tensor per chunk."""
        mel = self.log_mel(chunks).to(next(self.encoder.parameters()).dtype)
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            hidden = self.encoder(mel).last_hidden_state
        out = []
        for row, chunk in zip(hidden, chunks):
            tokens = (len(chunk) - 1) // SAMPLES_PER_TOKEN + 1
            out.append(row[: tokens * FRAMES_PER_TOKEN].reshape(tokens, self.output_dim))
        return out

    def forward(self, clips: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """One [token_count(clip), 4 * d] tensor per 16 kHz clip, chunks of all clips encoded in one batch."""
        pieces = [split_chunks(np.asarray(c, dtype=np.float32)) for c in clips]
        encoded = self.encode_chunks([chunk for p in pieces for chunk in p]) if any(pieces) else []
        out, at = [], 0
        for p in pieces:
            out.append(torch.cat(encoded[at:at + len(p)]) if p else torch.zeros(0, self.output_dim))
            at += len(p)
        return out
