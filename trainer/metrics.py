"""Training logs on rank 0: a console line every N steps, TensorBoard scalars, metrics.jsonl and a
loss-curve PNG at the end; throughput (tokens/s, model TFLOP/s per rank, MFU); per-dataset counters of a
blend; and each rank's record of its samples."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional


class MetricsLog:
    def __init__(self, run_dir: str | Path, enabled: bool, resume_step: int = 0):
        self.run_dir, self.enabled = Path(run_dir), enabled
        self.path = self.run_dir / "metrics.jsonl"
        self.board = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.path.exists():  # a resumed run rewrites what came after its checkpoint
            kept = [line for line in self.path.read_text().splitlines()
                    if line and json.loads(line)["step"] <= resume_step]
            self.path.write_text("".join(f"{line}\n" for line in kept))
        from torch.utils.tensorboard import SummaryWriter

        self.board = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=resume_step + 1 or None)

    def log(self, step: int, metrics: dict, console: Optional[str] = None) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        for name, value in metrics.items():
            if isinstance(value, (int, float)):
                self.board.add_scalar(name, value, step)
        if console:
            print(console, flush=True)

    def close(self) -> None:
        if self.board is not None:
            self.board.close()

    def plot_loss_curve(self, out: Optional[Path] = None, title: str = "training loss") -> Optional[Path]:
        """loss_curve.png: total, per-target-token, per-head and eval loss against step; under them the
        throughput (model TFLOP/s per rank, with an MFU scale where the peak is known) and the data wait."""
        if not self.enabled or not self.path.exists():
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = [json.loads(line) for line in self.path.read_text().splitlines() if line]
        fig = plt.figure(figsize=(8, 7))
        grid = fig.add_gridspec(2, 2, height_ratios=(3, 2))
        ax = fig.add_subplot(grid[0, :])
        for key, label in (("train/loss", "train loss"), ("train/token_loss", "per target token"),
                           ("train/loss_audio", "audio head"),
                           ("train/loss_text", "text head"), ("eval/loss", "eval loss")):
            points = [(r["step"], r[key]) for r in rows if key in r]
            if points:
                ax.plot(*zip(*points), label=label, marker="o" if key.startswith("eval") else None)
        ax.set_xlabel("step")
        ax.set_ylabel("cross-entropy")
        ax.set_title(title)
        ax.legend()
        ax.grid(alpha=0.3)
        plot_throughput(fig.add_subplot(grid[1, 0]), fig.add_subplot(grid[1, 1]), rows)
        out = out or self.run_dir / "loss_curve.png"
        fig.tight_layout()
        fig.savefig(out, dpi=100)
        plt.close(fig)
        return out


def plot_throughput(flops_ax, wait_ax, rows: list[dict]) -> None:
    """Model TFLOP/s per rank (an MFU scale on the right where the log has MFU) and the data wait, per log
    window: a dip in the first with a rise in the second is the data path, without it the model."""
    logged = [r for r in rows if "train/model_tflops_per_rank" in r]
    tflops = [r["train/model_tflops_per_rank"] for r in logged]
    scale, unit = (1, "TFLOP/s") if max(tflops, default=0) >= 1 else (1000, "GFLOP/s")  # as the console
    flops_ax.plot([r["step"] for r in logged], [scale * t for t in tflops])
    flops_ax.set_title(f"model {unit} per rank")
    peak = next((r["train/model_tflops_per_rank"] / r["train/mfu"] for r in reversed(rows) if r.get("train/mfu")),
                None)
    if peak:
        per_cent = 100 / (scale * peak)
        mfu = flops_ax.secondary_yaxis("right", functions=(lambda f: f * per_cent, lambda m: m / per_cent))
        mfu.set_ylabel("MFU %")
    wait_ax.plot([r["step"] for r in rows if "train/data_wait_fraction" in r],
                 [100 * r["train/data_wait_fraction"] for r in rows if "train/data_wait_fraction" in r])
    wait_ax.set_title("data wait, % of the time")
    for axis in (flops_ax, wait_ax):
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)


def throughput(tokens: float, flops: float, seconds: float, ranks: int, peak_tflops: Optional[float]) -> dict:
    """A log window's rates: `tokens` and model `flops` (model.flops) of all data-parallel ranks in `seconds`,
    spread over `ranks` processes (one GPU each; tensor and pipeline ranks share a replica's work); MFU
    where one GPU's peak is known."""
    per_rank = flops / seconds / ranks / 1e12
    rates = {"train/tokens_per_s": tokens / seconds, "train/model_tflops_per_rank": per_rank}
    if peak_tflops:
        rates["train/mfu"] = per_rank / peak_tflops
    return rates


def throughput_line(rates: dict) -> str:
    """`12,345 tok/s  412 TFLOP/s per rank (MFU 41.7%)` for the console line; GFLOP/s below one TFLOP/s."""
    tflops = rates["train/model_tflops_per_rank"]
    figure, unit = (tflops, "TFLOP/s") if tflops >= 1 else (tflops * 1000, "GFLOP/s")
    flops = f"{figure:,.0f} {unit}" if figure >= 100 else f"{figure:.3g} {unit}"
    mfu = f" (MFU {rates['train/mfu']:.1%})" if "train/mfu" in rates else ""
    return f"{rates['train/tokens_per_s']:,.0f} tok/s  {flops} per rank{mfu}"


class SampleRecord:
    """`data.record_samples`: RUN/samples/dp-R.jsonl, one line per micro-batch a data-parallel rank trained
    on: the step and each sample's origin (dataset, epoch, segment keys; or the text document). A resumed
    run first cuts every rank's file back to its checkpoint (rank 0, before any rank writes), so the
    files hold exactly what the surviving optimizer steps saw, on whatever number of ranks."""

    def __init__(self, run_dir: str | Path, dp_rank: int, enabled: bool):
        self.folder = Path(run_dir) / "samples"
        self.path = self.folder / f"dp-{dp_rank:05d}.jsonl"
        self.enabled, self._file = enabled, None

    def cut_back(self, step: int) -> None:
        """Keep the lines of steps <= `step` in every rank's file (a killed run's last line may be torn)."""
        for path in sorted(self.folder.glob("dp-*.jsonl")):
            kept = []
            for line in path.read_text().splitlines():
                try:
                    if json.loads(line)["step"] <= step:
                        kept.append(line)
                except ValueError:
                    pass
            path.write_text("".join(f"{line}\n" for line in kept))

    def add(self, step: int, datasets: list[str], origins: list[dict]) -> None:
        if not self.enabled:
            return
        if self._file is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a")
        samples = [{"dataset": datasets[o["dataset"]], **{k: o[k] for k in ("epoch", "keys", "text_doc") if k in o}}
                   for o in origins]
        self._file.write(json.dumps({"step": step, "samples": samples}) + "\n")

    def flush(self) -> None:
        """Before a checkpoint: what the checkpoint's steps trained on is on disk when the checkpoint is."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())


def dataset_figures(batches, datasets: int) -> list[float]:
    """[samples, audio seconds, tokens] per dataset of this rank's micro-batches of a step."""
    out = [0.0] * (3 * datasets)
    for batch in batches:
        for origin, length in zip(batch.origins, batch.sample_lengths):
            d = origin["dataset"]
            out[3 * d] += 1
            out[3 * d + 1] += origin.get("seconds", 0.0)
            out[3 * d + 2] += length
    return out


def dataset_metrics(counters: dict) -> dict:
    total = sum(c[0] for c in counters.values()) or 1
    out = {}
    for name, (samples, hours, tokens) in counters.items():
        out.update({f"data/{name}/samples": samples, f"data/{name}/share": samples / total,
                    f"data/{name}/audio_hours": hours, f"data/{name}/tokens": tokens})
    return out


def print_dataset_summary(job: str, specs, counters: dict) -> None:
    total = sum(c[0] for c in counters.values()) or 1
    weights = sum(spec.weight for spec in specs)
    print(f"{job}: {'dataset':<24} {'weight':>7} {'samples':>9} {'share':>7} {'audio h':>9} {'tokens':>11}")
    for spec in specs:
        samples, hours, tokens = counters[spec.name]
        print(f"{job}: {spec.name:<24} {spec.weight / weights:>7.1%} {samples:>9,} {samples / total:>7.1%} "
              f"{hours:>9.3f} {tokens:>11,}", flush=True)
