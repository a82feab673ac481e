"""The report's diarization post-processing rules and the Mandarin punctuation rule."""
import numpy as np
import pytest

from pipeline.segment import (
    Turn, chunk_turns, join_contiguous, merge_segments, merge_speaker_clusters, punctuate_by_gaps,
    reassign_chunks, relabel, split_by_duration, split_long_turns,
)

E1, E2, E3 = np.eye(3)


def at_similarity(base: np.ndarray, other: np.ndarray, cos: float) -> np.ndarray:
    """A unit vector with cosine `cos` to `base`, in the plane of base and other."""
    return cos * base + np.sqrt(1 - cos**2) * other


# ---- cluster merging (> 0.6) ---------------------------------------------------------------

def test_clusters_above_threshold_merge_and_below_stay():
    reps = {"S0": E1, "S1": at_similarity(E1, E2, 0.61), "S2": at_similarity(E1, E3, 0.59)}
    assert merge_speaker_clusters(reps, 0.6) == {"S0": "S0", "S1": "S0", "S2": "S2"}


def test_cluster_merging_is_transitive_and_order_free():
    reps = {"B": at_similarity(E1, E2, 0.7), "A": E1, "C": at_similarity(at_similarity(E1, E2, 0.7), E3, 0.7)}
    assert set(merge_speaker_clusters(reps, 0.6).values()) == {"A"}
    assert merge_speaker_clusters({}, 0.6) == {}


def test_exactly_at_threshold_does_not_merge():
    reps = {"S0": E1, "S1": at_similarity(E1, E2, 0.6)}
    assert merge_speaker_clusters(reps, 0.6) == {"S0": "S0", "S1": "S1"}


def test_relabel_applies_the_mapping():
    turns = [Turn(0, 1, "S1"), Turn(1, 2, "S2")]
    assert relabel(turns, {"S1": "S0"}) == [Turn(0, 1, "S0"), Turn(1, 2, "S2")]


# ---- chunk-based reassignment (1.5 s, < 0.5) -------------------------------------------------

def test_chunking_cuts_1_5_second_pieces():
    chunks = chunk_turns([Turn(0.0, 4.0, "A"), Turn(5.0, 6.0, "B")], 1.5)
    assert [(c.start, c.end) for c in chunks] == [(0.0, 1.5), (1.5, 3.0), (3.0, 4.0), (5.0, 6.0)]
    assert [c.speaker for c in chunks] == ["A", "A", "A", "B"]


def test_dissimilar_adjacent_chunks_go_to_their_nearest_cluster():
    # One diarized turn "A" whose last chunk is really B: only the pair across the change is dissimilar.
    chunks = chunk_turns([Turn(0.0, 6.0, "A")], 1.5)
    emb = np.stack([E1, E1, at_similarity(E1, E3, 0.9), at_similarity(E1, E2, 0.2)])
    out = reassign_chunks(chunks, emb, {"A": E1, "B": E2}, 0.5)
    assert [c.speaker for c in out] == ["A", "A", "A", "B"]
    assert join_contiguous(out) == [Turn(0.0, 4.5, "A"), Turn(4.5, 6.0, "B")]


def test_both_chunks_of_a_dissimilar_pair_are_reassigned():
    # Diarization labelled both chunks "B", but the first is closest to A: both move to their nearest.
    chunks = [Turn(0.0, 1.5, "B"), Turn(1.5, 3.0, "B")]
    emb = np.stack([at_similarity(E1, E3, 0.8), at_similarity(E2, E3, 0.8)])
    out = reassign_chunks(chunks, emb, {"A": E1, "B": E2}, 0.5)
    assert [c.speaker for c in out] == ["A", "B"]


def test_similar_adjacent_chunks_keep_their_labels():
    chunks = chunk_turns([Turn(0.0, 3.0, "A")], 1.5)
    emb = np.stack([E1, at_similarity(E1, E2, 0.51)])  # similar enough (>= 0.5) to each other
    out = reassign_chunks(chunks, emb, {"A": E1, "B": E2}, 0.5)
    assert [c.speaker for c in out] == ["A", "A"]


def test_reassignment_needs_one_embedding_per_chunk():
    with pytest.raises(ValueError):
        reassign_chunks([Turn(0, 1, "A")], np.zeros((2, 3)), {"A": E1}, 0.5)


# ---- segment merging (27 s, 2 s gap) ------------------------------------------------------------

def test_same_speaker_turns_merge_up_to_27_seconds():
    turns = [Turn(0, 10, "A"), Turn(10.5, 20, "A"), Turn(21, 27, "A"), Turn(27.5, 30, "A")]
    assert merge_segments(turns, 27.0, 2.0) == [Turn(0, 27, "A"), Turn(27.5, 30, "A")]


def test_a_gap_over_2_seconds_or_another_speaker_stops_merging():
    turns = [Turn(0, 3, "A"), Turn(5.01, 7, "A"), Turn(7.5, 9, "B"), Turn(9.5, 10, "A"), Turn(11.5, 12, "A")]
    assert merge_segments(turns, 27.0, 2.0) == [Turn(0, 3, "A"), Turn(5.01, 7, "A"), Turn(7.5, 9, "B"),
                                                Turn(9.5, 12, "A")]


def test_a_gap_of_exactly_2_seconds_still_merges():
    assert merge_segments([Turn(0, 1, "A"), Turn(3, 4, "A")], 27.0, 2.0) == [Turn(0, 4, "A")]


def test_short_segments_are_dropped_and_returned():
    kept, dropped = split_by_duration([Turn(0, 0.4, "A"), Turn(1, 3, "B")], 0.5)
    assert kept == [Turn(1, 3, "B")] and dropped == [Turn(0, 0.4, "A")]


def test_long_turns_are_split_within_the_maximum():
    parts = split_long_turns([Turn(0, 70, "A"), Turn(70, 80, "B")], 27.0)
    assert [p.duration for p in parts] == pytest.approx([70 / 3] * 3 + [10])
    assert parts[2].end == 70 and all(p.duration <= 27 for p in parts)


# ---- Paraformer punctuation by character gaps (0.5 s comma, 1.0 s period) -----------------------

@pytest.mark.parametrize("gap, mark", [(0.3, ""), (0.5, ""), (0.51, "，"), (0.99, "，"), (1.0, "，"), (1.01, "。"),
                                       (2.5, "。")])
def test_punctuation_by_gap(gap, mark):
    chars = [("好", 0.0, 0.2), ("的", 0.2 + gap, 0.4 + gap)]
    assert punctuate_by_gaps(chars, 0.5, 1.0) == f"好{mark}的"


def test_punctuation_on_a_sentence():
    chars = [("今", 0.0, 0.2), ("天", 0.2, 0.4), ("好", 1.0, 1.2), ("我", 2.5, 2.7), ("们", 2.7, 2.9)]
    assert punctuate_by_gaps(chars, 0.5, 1.0) == "今天，好。我们"
    assert punctuate_by_gaps([], 0.5, 1.0) == ""


def test_a_short_tail_joins_the_chunk_before_it():
    chunks = chunk_turns([Turn(0.0, 3.2, "A"), Turn(4.0, 4.3, "A")], 1.5, min_last_seconds=0.75)
    assert [(c.start, c.end) for c in chunks] == [(0.0, 1.5), (1.5, 3.2), (4.0, 4.3)]


def test_english_words_inside_mandarin_keep_their_spaces():
    chars = [("我", 0.0, 0.2), ("用", 0.2, 0.4), ("open", 0.4, 0.7), ("source", 0.7, 1.0), ("的", 1.0, 1.2),
             ("code", 2.5, 2.8)]
    assert punctuate_by_gaps(chars, 0.5, 1.0) == "我用open source的。code"
