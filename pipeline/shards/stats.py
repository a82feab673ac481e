"""Dataset totals and distributions, computed from the Parquet manifests alone (no tar is opened)."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.shards.layout import DatasetLayout
from pipeline.shards.manifest import read_failed, read_manifest, read_rejected

PERCENTILES = (5, 25, 50, 75, 95)
QUALITY_COLUMNS = ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "snr_db", "speech_ratio", "chars_per_sec",
                   "language_prob", "asr_avg_logprob")
_STATS_COLUMNS = ("shard", "recording_id", "speaker", "language", "duration", "size_bytes", *QUALITY_COLUMNS)


def distribution(values: np.ndarray) -> dict:
    """Count, mean, min, max and percentiles of the finite values (None everywhere when there are none)."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"count": 0, "mean": None, "min": None, "max": None, **{f"p{p}": None for p in PERCENTILES}}
    quantiles = np.percentile(values, PERCENTILES)
    return {"count": int(values.size), "mean": float(values.mean()), "min": float(values.min()),
            "max": float(values.max()), **{f"p{p}": float(q) for p, q in zip(PERCENTILES, quantiles)}}


def _floats(table: pa.Table, column: str) -> np.ndarray:
    return table.column(column).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)


def counts_by(table: pa.Table, keys: list[str], seconds_column: str | None = None) -> list[dict]:
    """Rows of `keys` with their count (and hours when a seconds column is given), biggest first."""
    aggregates = [(keys[0], "count")] + ([(seconds_column, "sum")] if seconds_column else [])
    grouped = table.group_by(keys, use_threads=True).aggregate(aggregates).to_pylist()
    out = []
    for row in grouped:
        entry = {k: row[k] for k in keys}
        entry["count"] = row[f"{keys[0]}_count"] if row[f"{keys[0]}_count"] is not None else 0
        if seconds_column:
            entry["hours"] = (row[f"{seconds_column}_sum"] or 0.0) / 3600
        out.append(entry)
    return sorted(out, key=lambda e: -e["count"])


def hours_by_language(table: pa.Table) -> list[dict]:
    """Segments and hours per language (missing language: 'unknown'), biggest first."""
    languages = pa.table({"language": pc.fill_null(table.column("language"), "unknown"),
                          "duration": table.column("duration")})
    return counts_by(languages, ["language"], "duration")


def speakers_per_recording(table: pa.Table) -> np.ndarray:
    """Distinct speaker labels in each recording (a segment without a label counts as one speaker)."""
    speaker = pc.fill_null(table.column("speaker"), "")
    pairs = pa.table({"recording_id": table.column("recording_id"), "speaker": speaker})
    grouped = pairs.group_by("recording_id").aggregate([("speaker", "count_distinct")])
    return grouped.column("speaker_count_distinct").to_numpy().astype(np.int64)


def totals_of(manifest: pa.Table, rejected: pa.Table, failed: pa.Table) -> dict:
    """Headline numbers from manifest rows (shard, recording_id, duration, size_bytes) and ledger rows."""
    return {
        "shards": pc.count_distinct(manifest.column("shard")).as_py(),
        "segments": manifest.num_rows,
        "recordings": pc.count_distinct(manifest.column("recording_id")).as_py(),
        "hours": (pc.sum(manifest.column("duration")).as_py() or 0.0) / 3600,
        "size_bytes": pc.sum(manifest.column("size_bytes")).as_py() or 0,
        "rejected": rejected.num_rows,
        "rejected_hours": (pc.sum(rejected.column("duration")).as_py() or 0.0) / 3600,
        "failed": failed.num_rows,
    }


def dataset_totals(layout: DatasetLayout) -> dict:
    """The headline numbers that dataset.json carries."""
    return totals_of(read_manifest(layout, columns=["shard", "recording_id", "duration", "size_bytes"]),
                     read_rejected(layout, columns=["duration"]), read_failed(layout, columns=["stage"]))


def dataset_stats(layout: DatasetLayout) -> dict:
    """Totals and distributions for `audiomill-shards stats` (JSON-serialisable)."""
    table = read_manifest(layout, columns=list(_STATS_COLUMNS))
    rejected = read_rejected(layout, columns=["recording_id", "stage", "reason", "duration"])
    failed = read_failed(layout, columns=["recording_id", "stage", "error_type"])
    speakers = speakers_per_recording(table)
    return {
        "totals": totals_of(table, rejected, failed),
        "languages": hours_by_language(table),
        "duration_seconds": distribution(_floats(table, "duration")),
        "speakers_per_recording": {
            **distribution(speakers.astype(np.float64)),
            "histogram": {str(k): v for k, v in sorted(Counter(speakers.tolist()).items())},
        },
        "quality": {c: distribution(_floats(table, c)) for c in QUALITY_COLUMNS},
        "rejected_by_reason": counts_by(rejected, ["stage", "reason"], "duration"),
        "failed_by_stage": counts_by(failed, ["stage", "error_type"]),
    }


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def format_stats(stats: dict) -> str:
    """A plain-text report of `dataset_stats`."""
    t = stats["totals"]
    lines = [
        f"shards {t['shards']}   recordings {t['recordings']}   segments {t['segments']}   "
        f"hours {t['hours']:.3f}   size {t['size_bytes'] / 1e6:.1f} MB",
        f"rejected {t['rejected']} ({t['rejected_hours']:.3f} h)   failed {t['failed']}",
        "",
        "languages:",
        *[f"  {e['language']:<10} {e['count']:>9} segments {e['hours']:>10.3f} h" for e in stats["languages"]],
        "",
        f"{'distribution':<24}{'count':>9}{'mean':>10}{'min':>10}" + "".join(f"{'p' + str(p):>10}" for p in PERCENTILES)
        + f"{'max':>10}",
    ]
    rows = [("duration_seconds", stats["duration_seconds"]),
            ("speakers_per_recording", stats["speakers_per_recording"]),
            *[(name, d) for name, d in stats["quality"].items()]]
    for name, d in rows:
        lines.append(f"{name:<24}{d['count']:>9}{_fmt(d['mean']):>10}{_fmt(d['min']):>10}"
                     + "".join(f"{_fmt(d[f'p{p}']):>10}" for p in PERCENTILES) + f"{_fmt(d['max']):>10}")
    lines += ["", "speakers per recording: " + ", ".join(
        f"{k}: {v}" for k, v in stats["speakers_per_recording"]["histogram"].items()) or "-"]
    lines += ["", "rejected by reason:"]
    lines += [f"  {e['stage']}/{e['reason']}: {e['count']} ({e['hours']:.3f} h)" for e in stats["rejected_by_reason"]]
    lines += ["  -"] if not stats["rejected_by_reason"] else []
    lines += ["failed by stage:"]
    lines += [f"  {e['stage']}/{e['error_type']}: {e['count']}" for e in stats["failed_by_stage"]]
    lines += ["  -"] if not stats["failed_by_stage"] else []
    return "\n".join(lines)


def stats_json(stats: dict) -> str:
    return json.dumps(stats, indent=2, sort_keys=True)
