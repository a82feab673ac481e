"""Stage 6, semantic tokens: each kept segment's audio -> GLM-4-Voice ids at 12.5 Hz (`KEY.tok.npy`).

The tokenizer is `model.semantic_tokenizer`; segments of every recording in the batch share its 30 s
chunk batches. Tokens come from the original audio, the same ids whichever copy the trainer picks.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np
from omegaconf import DictConfig

from pipeline.stages.base import Stage
from pipeline.stages.work import RecordingWork

TOKENIZER_SAMPLE_RATE = 16000


class TokenizeStage(Stage):
    name = "tokenize"

    def __init__(self, cfg: DictConfig, sample_rate: int):
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
