"""Supervised fine-tuning: the pretraining recipe with the fine-tuning config (ASR layout, its schedule),
starting from a pretraining checkpoint.

    torchrun --nproc-per-node 2 -m jobs.sft --config configs/sft/tiny.yaml run_dir=runs/sft \
        model.init_checkpoint=runs/tiny/checkpoints/step-00000040 data.dataset=... [key=value ...]

The model weights come from `model.init_checkpoint`; optimizer, schedule and data start fresh. Resumes
from the latest checkpoint in run_dir like pretraining.
"""
from __future__ import annotations

import sys

from jobs.cli import parse_job_args
from jobs.pretrain import main
from trainer.config import SftConfig

if __name__ == "__main__":  # dist checkpoint saving re-imports __main__ in helper processes
    sys.exit(main(parse_job_args(__doc__.splitlines()[0], SftConfig, name="sft"), job="sft"))
