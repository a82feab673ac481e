"""The GLM-4-Voice semantic tokenizer (`WhisperVQEncoder`): 16 kHz audio -> int ids at 12.5 Hz.

A Whisper encoder cut after `quantize_position` layers, with what transformers lacks written here:
a causal convolution front end, a block-causal attention mask (blocks of 200 frames, 4 s), average
pooling 50 Hz -> 12.5 Hz, and nearest-codebook lookup by squared L2 distance (facts A4).
Audio is cut into non-overlapping 30 s chunks, batched and padded to the longest chunk; each chunk of
n samples yields `(n - 1) // 1280 + 1` ids and a clip's ids are its chunks' ids in order (facts A5).

    tokenizer = SemanticTokenizer.from_folder("glm-4-voice-tokenizer")
    ids = tokenizer.tokenize([audio_16k])[0]   # np.int64, 12.5 per second
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from model.hf_folder import (
    ModelFolderError, load_exact, read_config, read_state_dict, resolve_model_folder, strip_prefix,
)
from model.log_mel import CHUNK_SAMPLES, HOP_LENGTH, log_mel_spectrogram, split_chunks

SAMPLES_PER_TOKEN = 1280          # 160 (mel hop) x 2 (conv stride) x 4 (pooling)
RIGHT_CONTEXT_SAMPLES = 200       # n_fft / 2: how far a centred STFT frame reaches past its sample
# Keys of the released checkpoint that play no part in the ids: the EMA codebook statistics of training
# and the position table added only after quantisation.
IGNORED_KEYS = ("ema_count", "ema_weight", "embed_positions2.", "layer_norm.")


def token_count(num_samples: int) -> int:
    """Ids the tokenizer yields for a 16 kHz clip: `(n - 1) // 1280 + 1` per 30 s chunk."""
    return sum((len(c) - 1) // SAMPLES_PER_TOKEN + 1 for c in split_chunks(np.empty(num_samples, np.int8)))


def whisper_vq_config(raw: dict):
    """A transformers `WhisperConfig` carrying the VQ fields of the released `config.json`."""
    from transformers import WhisperConfig

    cfg = WhisperConfig(**{k: v for k, v in raw.items() if k not in ("architectures", "model_type")})
    cfg._attn_implementation = "sdpa"
    required = ("pooling_kernel_size", "pooling_position", "quantize_position", "quantize_vocab_size")
    missing = [k for k in required if getattr(cfg, k, None) is None]
    if missing:
        raise ModelFolderError(f"tokenizer config lacks {missing}: not a WhisperVQEncoder config")
    if cfg.pooling_position != cfg.quantize_position:
        raise ModelFolderError("only pooling right before quantisation is supported (the released "
                               f"tokenizer pools and quantises after layer {cfg.quantize_position})")
    if getattr(cfg, "pooling_type", "avg") != "avg":
        raise ModelFolderError(f"pooling_type {cfg.pooling_type!r}: the released tokenizer uses 'avg'")
    return cfg


def block_causal_mask(valid: torch.Tensor, block_size: int | None) -> torch.Tensor:
    """Boolean [B, 1, T, T] mask, True where query i may see key j: j is valid and (j <= i or both in
    one block). `block_size=None` leaves only the padding mask, as a plain Whisper encoder.

    Boolean rather than additive: a quarter of the memory, which is what limits batching on CPU.
    """
    steps = torch.arange(valid.shape[1], device=valid.device)
    allowed = valid[:, None, None, :].bool()
    if block_size is not None:
        causal = (steps[None, :] <= steps[:, None]) | (steps[:, None] // block_size == steps[None, :] // block_size)
        allowed = allowed & causal
    return allowed


class WhisperVQEncoder(nn.Module):
    """The tokenizer network, with the released checkpoint's parameter names."""

    def __init__(self, config):
        from transformers.models.whisper.modeling_whisper import WhisperEncoderLayer

        super().__init__()
        self.config = config
        d = config.d_model
        self.causal_convolution = bool(getattr(config, "encoder_causal_convolution", False))
        self.block_size = getattr(config, "quantize_causal_block_size", None)
        self.conv1 = nn.Conv1d(config.num_mel_bins, d, kernel_size=3, padding=0 if self.causal_convolution else 1)
        self.conv2 = nn.Conv1d(d, d, kernel_size=3, stride=2, padding=0 if self.causal_convolution else 1)
        self.embed_positions = nn.Embedding(config.max_source_positions, d)
        self.layers = nn.ModuleList(WhisperEncoderLayer(config) for _ in range(config.quantize_position))
        self.codebook = nn.Embedding(config.quantize_vocab_size, d)
        self.pooling = config.pooling_kernel_size

    def _conv(self, conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
        # the causal front end sees no right context: two zeros on the left instead of one on each side
        return F.gelu(conv(F.pad(x, (2, 0)) if self.causal_convolution else x))

    def hidden_states(self, features: torch.Tensor, frame_mask: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Each layer's output at 50 Hz (before pooling) and the 50 Hz validity mask.

        features: [B, n_mels, T100] log-mel; frame_mask: [B, T100] 1 for frames of real audio.
        """
        x = self._conv(self.conv2, self._conv(self.conv1, features)).transpose(1, 2)
        valid = frame_mask[:, ::2][:, : x.shape[1]]
        h = x + self.embed_positions.weight[: x.shape[1]]
        mask = block_causal_mask(valid, self.block_size)
        outputs = []
        for layer in self.layers:
            h = layer(h, mask, layer_head_mask=None)[0]
            outputs.append(h)
        return outputs, valid

    def forward(self, features: torch.Tensor, frame_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Codebook ids [B, T12] and their validity mask [B, T12] (12.5 Hz)."""
        outputs, valid = self.hidden_states(features, frame_mask)
        h = outputs[-1].transpose(1, 2)
        if h.shape[-1] % self.pooling:
            h = F.pad(h, (0, self.pooling - h.shape[-1] % self.pooling))
        pooled = F.avg_pool1d(h, self.pooling, self.pooling).transpose(1, 2)
        flat = pooled.reshape(-1, pooled.shape[-1])
        codebook = self.codebook.weight
        # squared L2 as the reference computes it (no normalisation); argmin takes the first index on ties
        distance = torch.addmm((flat ** 2).sum(1, keepdim=True) + (codebook ** 2).sum(1)[None], flat, codebook.T,
                               beta=1, alpha=-2)
        ids = distance.argmin(dim=1).view(pooled.shape[:2])
        return ids, valid[:, :: self.pooling][:, : ids.shape[1]]


class SemanticTokenizer:
    """Loads a released-layout folder and tokenises clips in batches of 30 s chunks."""

    def __init__(self, encoder: WhisperVQEncoder, device: str = "cpu", batch_size: int = 32, name: str = ""):
        self.encoder = encoder.to(device).eval()
        self.device, self.batch_size, self.name = device, batch_size, name

    @classmethod
    def from_folder(cls, folder: str | Path, device: str = "cpu", batch_size: int = 32) -> "SemanticTokenizer":
        """A folder (or hub id) with `config.json` and weights, keys unprefixed or under `model.encoder.`."""
        folder = resolve_model_folder(folder)
        config = whisper_vq_config(read_config(folder))
        encoder = WhisperVQEncoder(config)
        state = strip_prefix(read_state_dict(folder), ["model.encoder."])
        # the prefixed full checkpoint carries all 32 layers; only the first quantize_position are built
        state = {k: v for k, v in state.items()
                 if not (k.startswith("layers.") and int(k.split(".")[1]) >= config.quantize_position)}
        load_exact(encoder, state, folder, ignore=IGNORED_KEYS)
        return cls(encoder, device=device, batch_size=batch_size, name=str(folder))

    def features(self, chunks: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel [B, n_mels, T100] and frame mask [B, T100] of chunks padded to the longest (x1280 samples).

        Each chunk is followed by at least 200 zeros, so its last frames see zeros whatever the batch:
        what the reference computes for every chunk shorter than its batch's longest.
        """
        longest = max(len(c) for c in chunks)
        padded = -(-longest // SAMPLES_PER_TOKEN) * SAMPLES_PER_TOKEN
        audio = torch.zeros(len(chunks), padded + RIGHT_CONTEXT_SAMPLES)
        for row, chunk in enumerate(chunks):
            audio[row, : len(chunk)] = torch.from_numpy(np.asarray(chunk, dtype=np.float32))
        frames = padded // HOP_LENGTH
        mel = log_mel_spectrogram(audio.to(self.device), self.encoder.config.num_mel_bins)[..., :frames]
        lengths = torch.tensor([len(c) for c in chunks], device=self.device)
        frame_mask = (torch.arange(frames, device=self.device)[None] * HOP_LENGTH < lengths[:, None]).long()
        return mel, frame_mask

    @torch.inference_mode()
    def tokenize_chunks(self, chunks: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Ids of each chunk (at most 30 s of 16 kHz float audio), batched `batch_size` at a time.

        Chunks are batched by length (ids do not depend on the batch), so little compute goes to padding.
        """
        order = sorted(range(len(chunks)), key=lambda i: len(chunks[i]))
        out: list[np.ndarray] = [np.zeros(0, np.int64)] * len(chunks)
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            ids, valid = self.encoder(*self.features([chunks[i] for i in batch]))
            for i, row, m in zip(batch, ids, valid):
                out[i] = row[m.bool()].cpu().numpy().astype(np.int64)
        return out

    def tokenize(self, clips: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Ids of each 16 kHz clip: its 30 s chunks' ids concatenated (chunks of all clips share batches)."""
        pieces = [split_chunks(np.asarray(c, dtype=np.float32), CHUNK_SAMPLES) for c in clips]
        ids = self.tokenize_chunks([chunk for p in pieces for chunk in p])
        out, at = [], 0
        for p in pieces:
            out.append(np.concatenate(ids[at:at + len(p)]) if p else np.zeros(0, np.int64))
            at += len(p)
        return out
