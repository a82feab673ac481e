"""PNG histograms of a dataset, from its manifests: durations, hours per language, quality, speakers."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.shards.layout import DatasetLayout  # noqa: E402
from pipeline.shards.manifest import read_manifest  # noqa: E402
from pipeline.shards.stats import QUALITY_COLUMNS, hours_by_language, speakers_per_recording  # noqa: E402


def _no_data(ax, title: str) -> None:
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_durations(durations: np.ndarray, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    if durations.size:
        ax.hist(durations, bins=min(60, max(10, durations.size // 5)), color="#4477aa")
        ax.axvline(np.median(durations), color="k", linestyle="--", label=f"median {np.median(durations):.1f} s")
        ax.legend()
        ax.set_title(f"Segment duration ({durations.size} segments, {durations.sum() / 3600:.2f} h)")
    else:
        _no_data(ax, "Segment duration")
    ax.set_xlabel("seconds")
    ax.set_ylabel("segments")
    return _save(fig, path)


def plot_language_hours(hours_by_language: dict[str, float], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    if hours_by_language:
        items = sorted(hours_by_language.items(), key=lambda kv: -kv[1])
        ax.bar([k for k, _ in items], [v for _, v in items], color="#228833")
        ax.set_title("Hours per language")
    else:
        _no_data(ax, "Hours per language")
    ax.set_ylabel("hours")
    return _save(fig, path)


def plot_quality(columns: dict[str, np.ndarray], path: Path) -> Path:
    fig, axes = plt.subplots(2, 4, figsize=(14, 6))
    for ax, (name, values) in zip(axes.flat, columns.items()):
        values = values[np.isfinite(values)]
        if values.size:
            ax.hist(values, bins=30, color="#aa3377")
            ax.set_title(f"{name} (median {np.median(values):.2f})")
        else:
            _no_data(ax, name)
    fig.suptitle("Quality scores per segment")
    return _save(fig, path)


def plot_speakers(speakers: np.ndarray, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    if speakers.size:
        counts = sorted(Counter(speakers.tolist()).items())
        ax.bar([str(k) for k, _ in counts], [v for _, v in counts], color="#ee6677")
        ax.set_title(f"Speakers per recording ({speakers.size} recordings)")
    else:
        _no_data(ax, "Speakers per recording")
    ax.set_xlabel("speakers")
    ax.set_ylabel("recordings")
    return _save(fig, path)


def plot_dataset(layout: DatasetLayout, out_dir: Path) -> list[Path]:
    """Write the four histograms as PNGs under `out_dir`; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table = read_manifest(layout.require(), columns=["recording_id", "speaker", "language", "duration",
                                                     *QUALITY_COLUMNS])
    durations = table.column("duration").to_numpy(zero_copy_only=False).astype(np.float64)
    hours = {e["language"]: e["hours"] for e in hours_by_language(table)}
    quality = {c: table.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in QUALITY_COLUMNS}
    return [
        plot_durations(durations, out_dir / "segment_duration.png"),
        plot_language_hours(hours, out_dir / "hours_per_language.png"),
        plot_quality(quality, out_dir / "quality_scores.png"),
        plot_speakers(speakers_per_recording(table), out_dir / "speakers_per_recording.png"),
    ]
