"""Training logs on rank 0: a console line every N steps, TensorBoard scalars, metrics.jsonl and a
loss-curve PNG at the end."""
from __future__ import annotations

import json
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

    def plot_loss_curve(self, out: Optional[Path] = None) -> Optional[Path]:
        """loss_curve.png: total, per-target-token, per-head and eval loss against step."""
        if not self.enabled or not self.path.exists():
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = [json.loads(line) for line in self.path.read_text().splitlines() if line]
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for key, label in (("train/loss", "train loss"), ("train/token_loss", "per target token"),
                           ("train/loss_audio", "audio head"),
                           ("train/loss_text", "text head"), ("eval/loss", "eval loss")):
            points = [(r["step"], r[key]) for r in rows if key in r]
            if points:
                ax.plot(*zip(*points), label=label, marker="o" if key.startswith("eval") else None)
        ax.set_xlabel("step")
        ax.set_ylabel("cross-entropy")
        ax.set_title("pretraining loss")
        ax.legend()
        ax.grid(alpha=0.3)
        out = out or self.run_dir / "loss_curve.png"
        fig.tight_layout()
        fig.savefig(out, dpi=100)
        plt.close(fig)
        return out
