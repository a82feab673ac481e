"""The evaluation job's typed configuration (`configs/evaluate/default.yaml` documents each value)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from pipeline.evaluation.scoring import ScoringSettings


@dataclass(frozen=True)
class AblationSettings:
    """`--ablate`: the curation config the variants start from (None: the one recorded in the dataset's
    dataset.json, which made it), with `overrides` (key=value, e.g. a device for this machine)."""
    curate_config: Optional[str] = None
    overrides: List[str] = field(default_factory=list)


@dataclass(frozen=True)
class EvaluateConfig:
    refs: str = MISSING
    dataset: str = MISSING
    storage_options: Dict[str, Any] = field(default_factory=dict)
    out: str = "evaluation"
    scoring: ScoringSettings = field(default_factory=ScoringSettings)
    ablation: AblationSettings = field(default_factory=AblationSettings)

    def problems(self) -> list[str]:
        return [f"scoring.{p}" for p in self.scoring.problems()]
