"""Packing task samples into fixed-length rows, each position marked with its sample, and batching.

Targets are next-token: position p of a sample predicts its token p+1, so a head's label at p is the
stream's id at p+1 and its loss mask is that position's target flag. The last position of each sample
predicts nothing, so samples packed together never learn across their border.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from trainer.data.tasks import TASKS, TaskSample


@dataclass
class PackedBatch:
    """[rows, seq_len] arrays; `clips` hold the audio of every continuous span in row-major order."""
    audio_ids: np.ndarray
    text_ids: np.ndarray
    audio_labels: np.ndarray
    text_labels: np.ndarray
    audio_loss_mask: np.ndarray
    text_loss_mask: np.ndarray
    continuous: np.ndarray
    position_ids: np.ndarray
    document_ids: np.ndarray       # sample index within the row (-1 on padding): the model's attention stays
                                   # within each sample (model.kimi_audio.sample_segments)
    task_ids: np.ndarray           # index into TASKS per position (-1 on padding)
    clips: list
    origins: list = field(default_factory=list)  # each sample's origin, in order (trainer.data.stream)
    sample_lengths: list = field(default_factory=list)  # each sample's positions, in order


def pack_rows(samples: Sequence[TaskSample], seq_len: int, pad_id: int) -> PackedBatch:
    """Samples placed one after another into rows of `seq_len`, in order, a new row when one is full."""
    rows: list[list[TaskSample]] = [[]]
    used = 0
    for s in samples:
        if len(s) > seq_len:
            raise ValueError(f"a {s.task} sample of {len(s)} tokens does not fit seq_len {seq_len}")
        if used + len(s) > seq_len:
            rows.append([])
            used = 0
        rows[-1].append(s)
        used += len(s)
    shape = (len(rows), seq_len)
    out = PackedBatch(*(np.full(shape, pad_id, np.int64) for _ in range(4)),
                      *(np.zeros(shape, bool) for _ in range(3)), np.zeros(shape, np.int64),
                      np.full(shape, -1, np.int64), np.full(shape, -1, np.int64), [])
    for r, row in enumerate(rows):
        at = 0
        for d, s in enumerate(row):
            n, span = len(s), slice(at, at + len(s))
            out.audio_ids[r, span], out.text_ids[r, span] = s.audio_ids, s.text_ids
            out.audio_labels[r, at:at + n - 1], out.text_labels[r, at:at + n - 1] = s.audio_ids[1:], s.text_ids[1:]
            out.audio_loss_mask[r, at:at + n - 1] = s.audio_targets[1:]
            out.text_loss_mask[r, at:at + n - 1] = s.text_targets[1:]
            out.continuous[r, span], out.position_ids[r, span] = s.continuous, np.arange(n)
            out.document_ids[r, span], out.task_ids[r, span] = d, TASKS.index(s.task)
            out.clips.extend(s.clips)
            out.origins.append(s.origin)
            out.sample_lengths.append(n)
            at += n
    return out
