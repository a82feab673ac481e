"""Instruction pools (report §3.2: about 200 for ASR, 30 for each other task), written and optionally
spoken, and the deterministic draw of one for a conversation that brings none.

A pools file (`configs/sft/instructions.yaml`) maps a pool name to its instructions, each a text and
optionally an audio file of the same words spoken (a path relative to the pools file). A conversation's
pool is its line's `instruction_pool`, else its task type. The report picks written or spoken at random;
here the draw is a function of the seed and the conversation, so a rerun prepares the same data.
"""
from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np


@dataclass(frozen=True)
class Instruction:
    text: str
    audio: Optional[str] = None


@dataclass(frozen=True)
class InstructionPools:
    """`pools`: name -> instructions; `spoken_fraction`: how often a spoken one (where it has audio) is
    chosen over the written; `folder`: what relative audio paths are relative to."""
    pools: Dict[str, List[Instruction]] = field(default_factory=dict)
    spoken_fraction: float = 0.5
    folder: str = ""

    def problems(self, prefix: str = "instructions") -> list[str]:
        problems = []
        for name, items in self.pools.items():
            for i, item in enumerate(items):
                if not item.text.strip():
                    problems.append(f"{prefix}.pools.{name}[{i}]: empty instruction")
                if item.audio and not os.path.isfile(self.audio_path(item)):
                    problems.append(f"{prefix}.pools.{name}[{i}]: no audio file {self.audio_path(item)}")
        return problems

    def audio_path(self, item: Instruction) -> str:
        return os.path.join(self.folder, item.audio) if item.audio else ""

    def draw(self, pool: str, seed: int, conversation_id: str) -> Optional[tuple[str, Optional[str]]]:
        """(text, audio path or None) of the instruction for this conversation; None when the pool is empty
        or absent. Spoken (audio set) with probability `spoken_fraction` when the instruction has audio."""
        items = self.pools.get(pool) or []
        if not items:
            return None
        rng = np.random.default_rng([seed, zlib.crc32(conversation_id.encode())])
        item = items[int(rng.integers(len(items)))]
        spoken = item.audio is not None and rng.random() < self.spoken_fraction
        return item.text, self.audio_path(item) if spoken else None


def load_pools(path: Optional[str], spoken_fraction: float) -> InstructionPools:
    """The pools of a YAML file (`{pools: {name: [text or {text, audio}]}}`); none without a path."""
    if not path:
        return InstructionPools(spoken_fraction=spoken_fraction)
    from omegaconf import OmegaConf

    raw = OmegaConf.to_container(OmegaConf.load(path))
    pools = {name: [Instruction(item) if isinstance(item, str) else Instruction(item["text"], item.get("audio"))
                    for item in items or []] for name, items in (raw.get("pools") or {}).items()}
    return InstructionPools(pools, spoken_fraction, os.path.dirname(os.path.abspath(path)))
