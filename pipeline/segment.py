"""The Kimi-Audio report's diarization post-processing (report §3.1), as pure functions on numpy.

1. `merge_speaker_clusters`: clusters whose representative embeddings have cosine similarity above a
   threshold (report: 0.6) are one speaker.
2. `reassign_chunks`: turns are cut into chunks (report: 1.5 s); where two adjacent chunks are less
   similar than a threshold (report: 0.5), each goes to the cluster it is most similar to.
3. `merge_segments`: adjacent same-speaker turns are merged until the merged length would exceed a
   maximum (report: 27 s) or the silence between them exceeds a gap (report: 2 s).

Times are seconds from the start of the recording. Thresholds come from the curation config.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import numpy as np


@dataclass(frozen=True, slots=True)
class Turn:
    """A stretch of one speaker's speech."""
    start: float
    end: float
    speaker: str

    @property
    def duration(self) -> float:
        return self.end - self.start


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of the rows of `a` (N, D) against the rows of `b` (M, D): (N, M)."""
    a = np.atleast_2d(a).astype(np.float64)
    b = np.atleast_2d(b).astype(np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


def merge_speaker_clusters(representatives: Mapping[str, np.ndarray], threshold: float) -> dict[str, str]:
    """Map each cluster label to the label it merges into (itself when it stays alone).

    Pairs above `threshold` are linked and linked clusters form one speaker (single linkage, so the
    result does not depend on the order of the pairs); a group takes its first label in sorted order.

    >>> merge_speaker_clusters({"A": np.array([1, 0]), "B": np.array([0.9, 0.1]), "C": np.array([0, 1])}, 0.6)
    {'A': 'A', 'B': 'A', 'C': 'C'}
    """
    labels = sorted(representatives)
    parent = {label: label for label in labels}

    def root(label: str) -> str:
        while parent[label] != label:
            label = parent[label]
        return label

    if labels:
        similarity = cosine_similarity(np.stack([representatives[l] for l in labels]),
                                       np.stack([representatives[l] for l in labels]))
        for i in range(len(labels)):
            for j in range(i + 1, len(labels)):
                if similarity[i, j] > threshold:
                    a, b = sorted((root(labels[i]), root(labels[j])))
                    parent[b] = a
    return {label: root(label) for label in labels}


def relabel(turns: Sequence[Turn], mapping: Mapping[str, str]) -> list[Turn]:
    return [replace(t, speaker=mapping.get(t.speaker, t.speaker)) for t in turns]


def chunk_turns(turns: Sequence[Turn], chunk_seconds: float, min_last_seconds: float = 0.0) -> list[Turn]:
    """Cut each turn into consecutive chunks of `chunk_seconds`. The last chunk of a turn may be shorter;
    when it would be shorter than `min_last_seconds` it joins the chunk before it (a 0.2 s tail embeds as
    noise and would found a cluster of its own)."""
    chunks = []
    for turn in turns:
        n = max(1, int(np.ceil(turn.duration / chunk_seconds - 1e-9)))
        if n > 1 and turn.duration - (n - 1) * chunk_seconds < min_last_seconds:
            n -= 1
        edges = [turn.start + i * chunk_seconds for i in range(n)] + [turn.end]
        chunks += [Turn(edges[i], min(edges[i + 1], turn.end), turn.speaker) for i in range(n)]
    return chunks


def reassign_chunks(chunks: Sequence[Turn], chunk_embeddings: np.ndarray,
                    cluster_embeddings: Mapping[str, np.ndarray], threshold: float) -> list[Turn]:
    """Relabel chunks at speaker changes the diarizer missed.

    For each pair of adjacent chunks (in time order) whose embeddings' cosine similarity is below
    `threshold`, both chunks are assigned to the cluster whose representative they are most similar to.
    Other chunks keep their label.
    """
    if len(chunks) != len(chunk_embeddings):
        raise ValueError(f"{len(chunks)} chunks but {len(chunk_embeddings)} embeddings")
    if not chunks:
        return []
    order = sorted(range(len(chunks)), key=lambda i: chunks[i].start)
    labels = sorted(cluster_embeddings)
    to_clusters = cosine_similarity(chunk_embeddings, np.stack([cluster_embeddings[l] for l in labels]))
    between = cosine_similarity(chunk_embeddings, chunk_embeddings)
    speakers = [c.speaker for c in chunks]
    for a, b in zip(order, order[1:]):
        if between[a, b] < threshold:
            for i in (a, b):
                speakers[i] = labels[int(np.argmax(to_clusters[i]))]
    return [replace(chunks[i], speaker=speakers[i]) for i in order]


def join_contiguous(turns: Sequence[Turn], tolerance: float = 1e-6) -> list[Turn]:
    """Join same-speaker turns that touch (the chunks of one turn that kept one label)."""
    out: list[Turn] = []
    for turn in sorted(turns, key=lambda t: t.start):
        if out and out[-1].speaker == turn.speaker and turn.start - out[-1].end <= tolerance:
            out[-1] = replace(out[-1], end=max(out[-1].end, turn.end))
        else:
            out.append(turn)
    return out


def split_long_turns(turns: Sequence[Turn], max_seconds: float) -> list[Turn]:
    """Split turns longer than `max_seconds` into equal parts no longer than it (ASR sees 30 s windows)."""
    out = []
    for turn in turns:
        n = max(1, int(np.ceil(turn.duration / max_seconds - 1e-9)))
        step = turn.duration / n
        out += [Turn(turn.start + i * step, turn.start + (i + 1) * step if i < n - 1 else turn.end, turn.speaker)
                for i in range(n)]
    return out


def merge_segments(turns: Sequence[Turn], max_seconds: float, max_gap: float) -> list[Turn]:
    """Merge adjacent same-speaker turns while the merged span stays within `max_seconds` and each
    silence between them is at most `max_gap` seconds."""
    out: list[Turn] = []
    for turn in sorted(turns, key=lambda t: t.start):
        if out:
            last = out[-1]
            if (last.speaker == turn.speaker and turn.start - last.end <= max_gap
                    and turn.end - last.start <= max_seconds):
                out[-1] = replace(last, end=max(last.end, turn.end))
                continue
        out.append(turn)
    return out


def split_by_duration(turns: Sequence[Turn], min_seconds: float) -> tuple[list[Turn], list[Turn]]:
    """(kept, too short): segments shorter than `min_seconds` are dropped (and recorded by the caller)."""
    kept = [t for t in turns if t.duration >= min_seconds]
    return kept, [t for t in turns if t.duration < min_seconds]


def punctuate_by_gaps(chars: Sequence[tuple[str, float, float]], comma_gap: float, period_gap: float,
                      comma: str = "，", period: str = "。") -> str:
    """Punctuate character-timestamped text (Paraformer-zh gives none), the report's rule:
    a gap above `comma_gap` and up to `period_gap` seconds inserts a comma, above `period_gap` a period.

    `chars` are (text, start, end) in time order; the gap is next start minus previous end. Characters
    join directly; two English words in a row (Paraformer-zh merges their pieces) get a space.

    >>> punctuate_by_gaps([("你", 0.0, 0.2), ("好", 0.9, 1.1), ("吗", 2.5, 2.7)], 0.5, 1.0)
    '你，好。吗'
    >>> punctuate_by_gaps([("用", 0.0, 0.2), ("open", 0.2, 0.5), ("source", 0.5, 0.9)], 0.5, 1.0)
    '用open source'
    """
    pieces = []
    for i, (text, start, _) in enumerate(chars):
        if i:
            gap = start - chars[i - 1][2]
            if gap > period_gap:
                pieces.append(period)
            elif gap > comma_gap:
                pieces.append(comma)
            elif text.isascii() and chars[i - 1][0].isascii():
                pieces.append(" ")
        pieces.append(text)
    return "".join(pieces)


def cluster_embeddings(embeddings: np.ndarray, threshold: float) -> np.ndarray:
    """Average-linkage agglomerative clustering: clusters whose mean cosine similarity stays above
    `threshold` are one; labels 0..K-1 in order of first appearance."""
    n = len(embeddings)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if n == 1:
        return np.zeros(1, dtype=np.int64)
    from scipy.cluster.hierarchy import fcluster, linkage

    normed = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    tree = linkage(normed, method="average", metric="cosine")
    raw = fcluster(tree, t=1.0 - threshold, criterion="distance")
    first_seen = {label: i for i, label in reversed(list(enumerate(raw)))}
    order = {label: rank for rank, label in enumerate(sorted(first_seen, key=first_seen.get))}
    return np.array([order[label] for label in raw], dtype=np.int64)


def cluster_representatives(labels: Sequence[str], embeddings: np.ndarray) -> dict[str, np.ndarray]:
    """Mean of the unit-normalised embeddings of each label."""
    normed = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    return {label: normed[[i for i, l in enumerate(labels) if l == label]].mean(axis=0) for label in set(labels)}
