"""Stage 2, speech enhancement with demucs: the vocals stem of an HTDemucs model.

The original audio stays; the enhanced copy is stored beside it (`KEY.enh.flac`) so the trainer can pick
either 1:1, as the report does. The model comes from a local demucs repo folder (`<sig>.th` plus a bag
`<name>.yaml`) or, with `repo: null`, from demucs' default remote.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np

from pipeline.capacity import PoolResources
from pipeline.stages.base import Stage
from pipeline.stages.work import RecordingWork


@dataclass(frozen=True)
class EnhanceSettings:
    """The `enhance` section: demucs `model` (bag name or signature) from `repo` (a local folder with
    `<sig>.th` and `<name>.yaml`; None: demucs' remote), its `stem`, on `device`; `shifts` and `overlap`
    trade quality for speed."""
    enabled: bool = True
    model: str = "htdemucs"
    repo: Optional[str] = None
    stem: str = "vocals"
    device: str = "cuda"
    shifts: int = 0
    overlap: float = 0.25
    torch_threads: int = 4

    def problems(self) -> list[str]:
        if not self.enabled:
            return []
        problems = []
        if self.repo is not None:
            repo = Path(self.repo)
            if not ((repo / f"{self.model}.yaml").is_file() or list(repo.glob(f"{self.model}*.th"))):
                problems.append(f"enhance.repo: no demucs model {self.model!r} ({self.model}.yaml or "
                                f"{self.model}.th) in {repo}")
        if not 0 <= self.overlap < 1 or self.shifts < 0 or self.torch_threads < 1:
            problems.append("enhance: need 0 <= overlap < 1, shifts >= 0 and torch_threads >= 1")
        return problems


ENHANCE_RESOURCES = PoolResources(concurrency=(1, 32), num_cpus=2, num_gpus=1, memory_mb=8192)


class EnhanceStage(Stage):
    name = "enhance"

    def __init__(self, cfg: EnhanceSettings, sample_rate: int):
        self.cfg, self.sample_rate = cfg, sample_rate

    def setup(self) -> None:
        import torch
        from demucs.pretrained import get_model

        torch.set_num_threads(self.cfg.torch_threads)
        self.model = get_model(self.cfg.model, repo=Path(self.cfg.repo) if self.cfg.repo else None)
        self.model.eval()
        if self.cfg.stem not in self.model.sources:
            raise ValueError(f"demucs model {self.cfg.model} has no {self.cfg.stem!r} stem: {self.model.sources}")
        self.stem = self.model.sources.index(self.cfg.stem)

    def enhance(self, audio: np.ndarray) -> np.ndarray:
        """The chosen stem of mono 16 kHz audio, as mono at the same rate and length."""
        import torch
        import torchaudio.functional as F
        from demucs.apply import apply_model

        model_rate = self.model.samplerate
        wav = F.resample(torch.from_numpy(audio), self.sample_rate, model_rate)
        wav = wav.expand(self.model.audio_channels, -1)
        mean, std = wav.mean(), wav.std() + 1e-8  # demucs models expect a normalised mix
        with torch.inference_mode():
            sources = apply_model(self.model, ((wav - mean) / std)[None], device=self.cfg.device,
                                  shifts=self.cfg.shifts, split=True, overlap=self.cfg.overlap, progress=False)
        stem = sources[0, self.stem].mean(0) * std + mean
        out = F.resample(stem.cpu(), model_rate, self.sample_rate).numpy().astype(np.float32)
        out = out[: len(audio)] if len(out) >= len(audio) else np.pad(out, (0, len(audio) - len(out)))
        return np.clip(out, -1.0, 1.0)

    def process(self, work: RecordingWork) -> RecordingWork:
        return replace(work, enhanced=self.enhance(work.audio))
