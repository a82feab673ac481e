"""Comparing a figure with its reference on a machine whose speed wanders: alternating passes, medians."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

RUNS = 3


def seconds_of(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def alternating_medians(measure: Callable[[], float], reference: Callable[[], float], runs: int = RUNS
                        ) -> tuple[float, float, list[tuple[float, float]]]:
    """Medians of `runs` alternating passes of a figure and its reference, and the passes. One pass of either
    varies by a third here (other processes, the page cache); alternating spreads that over both."""
    passes = [(measure(), reference()) for _ in range(runs)]
    ours, theirs = (float(np.median(values)) for values in zip(*passes))
    return ours, theirs, passes


def passes_text(passes: list[tuple[float, float]], fmt: str = ",.0f") -> str:
    return f"medians of {len(passes)}: " + ", ".join(f"{a:{fmt}}/{b:{fmt}}" for a, b in passes)
