"""The evaluation's report: a table for the console, a JSON document, and a PNG of per-recording bars
(and the ablation's variants beside the full pipeline)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.evaluation.scoring import RecordingScore  # noqa: E402

COLUMNS = (("DER", "der"), ("JER", "jer"), ("missed", "missed"), ("false al.", "false_alarm"),
           ("confusion", "confusion"), ("WER", "wer"), ("CER", "cer"))


def _cell(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def format_table(scores: Sequence[RecordingScore], overall: RecordingScore,
                 ablation: Optional[dict[str, Optional[RecordingScore]]] = None) -> str:
    """Rates in percent, one row per recording, then the overall row; then the ablation's rows."""
    width = max([len(s.name) for s in scores] + [len(name) for name in (ablation or {})] + [12])
    header = f"{'recording':<{width}}  {'speech s':>8}  " + "  ".join(f"{title:>9}" for title, _ in COLUMNS)

    def row(name: str, score: RecordingScore) -> str:
        return (f"{name:<{width}}  {score.speech_seconds:8.1f}  "
                + "  ".join(f"{_cell(getattr(score, key)):>9}" for _, key in COLUMNS))

    lines = [header, "-" * len(header)]
    for score in scores:
        lines.append(row(score.name, score) + ("" if score.in_dataset else "  (not in the dataset)"))
    lines += ["-" * len(header), row(overall.name, overall)]
    if ablation:
        lines += ["", f"{'ablation (overall)':<{width}}  {'':>8}  " + "  ".join(f"{t:>9}" for t, _ in COLUMNS),
                  "-" * len(header)]
        for name, score in ablation.items():
            lines.append(row(name, score) if score is not None else f"{name:<{width}}  skipped")
    return "\n".join(lines)


def report_document(scores: Sequence[RecordingScore], overall: RecordingScore, settings: dict,
                    ablation: Optional[dict[str, Optional[RecordingScore]]] = None) -> dict:
    document = {"settings": settings, "overall": overall.to_dict(), "recordings": [s.to_dict() for s in scores]}
    if ablation is not None:
        document["ablation"] = {name: None if score is None else score.to_dict() for name, score in ablation.items()}
    return document


def plot_report(scores: Sequence[RecordingScore], overall: RecordingScore, path: Path,
                ablation: Optional[dict[str, Optional[RecordingScore]]] = None) -> Path:
    """Per-recording DER (stacked: missed, false alarm, confusion) and WER bars; the ablation's overall
    DER and WER per variant in a second panel."""
    panels = 2 if ablation else 1
    fig, axes = plt.subplots(panels, 1, figsize=(max(7.0, 0.6 * len(scores) + 3), 4 * panels), squeeze=False)
    ax = axes[0][0]
    names = [s.name for s in scores] + ["overall"]
    rows = list(scores) + [overall]
    x = np.arange(len(rows))
    bottom = np.zeros(len(rows))
    for key, label, colour in (("missed", "missed", "#bb5566"), ("false_alarm", "false alarm", "#ddaa33"),
                               ("confusion", "confusion", "#4477aa")):
        values = np.array([100 * (getattr(r, key) or 0.0) for r in rows])
        ax.bar(x - 0.2, values, 0.4, bottom=bottom, label=f"DER: {label}", color=colour)
        bottom += values
    ax.bar(x + 0.2, [100 * (r.wer or 0.0) for r in rows], 0.4, label="WER", color="#228833")
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("percent")
    ax.set_title(f"Labels against references: DER {_cell(overall.der)}, WER {_cell(overall.wer)} overall")
    ax.legend(fontsize=8)
    if ablation:
        ax = axes[1][0]
        variants = [(name, score) for name, score in ablation.items() if score is not None]
        x = np.arange(len(variants))
        ax.bar(x - 0.2, [100 * (s.der or 0.0) for _, s in variants], 0.4, label="DER", color="#4477aa")
        ax.bar(x + 0.2, [100 * (s.wer or 0.0) for _, s in variants], 0.4, label="WER", color="#228833")
        ax.set_xticks(x, [name for name, _ in variants], rotation=20, ha="right")
        ax.set_ylabel("percent")
        ax.set_title("Ablation of the post-processing rules and of enhancement (overall)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
