"""Stage 6, semantic tokens: each kept segment's audio -> GLM-4-Voice ids at 12.5 Hz (`KEY.tok.npy`).

The tokenizer is `model.semantic_tokenizer`; segments of every recording in the batch share its 30 s
chunk batches. Tokens come from the original audio, the same ids whichever copy the trainer picks.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from pipeline.capacity import PoolResources
from pipeline.model_folders import model_folder_problem
from pipeline.stages.base import Stage
from pipeline.stages.work import RecordingWork

TOKENIZER_SAMPLE_RATE = 16000


@dataclass(frozen=True)
class TokenizeSettings:
    """The `tokenize` section: semantic tokens (`KEY.tok.npy`) for the trainer's discrete audio stream, from
    `model` (hub id, or a local folder in the released layout) on `device`, `batch_size` 30 s chunks per
    forward (the reference batches 128)."""
    enabled: bool = True
    model: str = "THUDM/glm-4-voice-tokenizer"
    device: str = "cuda"
    batch_size: int = 128
    torch_threads: int = 4

    def problems(self) -> list[str]:
        if not self.enabled:
            return []
        problems = [p for p in [model_folder_problem("tokenize.model", self.model, "config.json",
                                                     "semantic tokenizer folder")] if p]
        if self.batch_size < 1 or self.torch_threads < 1:
            problems.append("tokenize: batch_size and torch_threads must be >= 1")
        return problems


TOKENIZE_RESOURCES = PoolResources(concurrency=(1, 16), num_cpus=1, num_gpus=1, memory_mb=6144, batch_size=8)


class TokenizeStage(Stage):
    name = "tokenize"

    def __init__(self, cfg: TokenizeSettings, sample_rate: int):
        self.cfg, self.sample_rate = cfg, sample_rate

    def setup(self) -> None:
        import torch

        from model.semantic_tokenizer import SemanticTokenizer

        torch.set_num_threads(self.cfg.torch_threads)
        self.tokenizer = SemanticTokenizer.from_folder(self.cfg.model, device=self.cfg.device,
                                                       batch_size=self.cfg.batch_size)

    def segment_audio(self, work: RecordingWork) -> list[np.ndarray]:
        """16 kHz audio of each kept segment, cut exactly as the shard stores it."""
        sr = work.sample_rate
        clips = [work.audio[round(s.start * sr):round(s.end * sr)] for s in work.kept_segments()]
        if sr != TOKENIZER_SAMPLE_RATE:
            import torch
            import torchaudio.functional as F

            clips = [F.resample(torch.from_numpy(c), sr, TOKENIZER_SAMPLE_RATE).numpy() for c in clips]
        return clips

    def process_batch(self, works: Sequence[RecordingWork]) -> list[RecordingWork]:
        clips = [self.segment_audio(w) for w in works]
        ids = iter(self.tokenizer.tokenize([c for per_work in clips for c in per_work]))
        out = []
        for work in works:
            segments = tuple(s if s.rejection is not None else
                             replace(s, tokens=next(ids).astype(np.int32), token_model=self.cfg.model)
                             for s in work.segments)
            out.append(replace(work, segments=segments))
        return out

    def process(self, work: RecordingWork) -> RecordingWork:
        return self.process_batch([work])[0]
