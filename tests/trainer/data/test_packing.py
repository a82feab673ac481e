"""Packing: next-token labels inside each sample, each position marked with its sample, positions restart."""
import numpy as np

from trainer.data.packing import pack_rows
from trainer.data.tasks import SpecialIds, build_text_only, build_task, SegmentInput

IDS = SpecialIds(blank=500, text_eos=501, media_begin=502, media_end=503, audio_offset=512, audio_vocab_size=512)


def test_two_samples_in_a_row_learn_nothing_across_their_border():
    a = build_text_only([1, 2, 3], IDS)                                              # 4 tokens
    b = build_task("tts", [SegmentInput(np.array([7, 8]), [4], None)], IDS)          # 4 tokens
    batch = pack_rows([a, b], seq_len=10, pad_id=500)
    assert batch.audio_ids.shape == (1, 10)
    assert batch.text_labels[0, :3].tolist() == [2, 3, 501]
    assert batch.text_loss_mask[0].tolist() == [True, True, True] + [False] * 7
    # b's audio targets are its positions 2 and 3; predicted from positions 1 and 2 of b
    assert batch.audio_loss_mask[0].tolist() == [False] * 5 + [True, True] + [False] * 3
    assert batch.audio_labels[0, 5:7].tolist() == [519, 520]
    assert batch.position_ids[0, :8].tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    assert batch.document_ids[0].tolist() == [0] * 4 + [1] * 4 + [-1] * 2  # what confines the model's attention


def test_a_sample_that_does_not_fit_starts_a_new_row():
    samples = [build_text_only([1] * 5, IDS), build_text_only([2] * 5, IDS), build_text_only([3] * 2, IDS)]
    batch = pack_rows(samples, seq_len=10, pad_id=500)
    assert batch.text_ids.shape == (2, 10)
    assert batch.document_ids[0].tolist()[:6] == [0] * 6 and batch.document_ids[1].tolist()[:9] == [0] * 6 + [1] * 3
