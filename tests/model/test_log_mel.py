import numpy as np
import torch
from transformers import WhisperFeatureExtractor

from model.log_mel import CHUNK_SAMPLES, log_mel_spectrogram, split_chunks
from tests.model.conftest import noise_clip


def test_log_mel_matches_whisper_feature_extractor_on_a_padded_30s_chunk():
    clip = noise_clip(7.3)
    extractor = WhisperFeatureExtractor(feature_size=128)
    expected = extractor(clip, sampling_rate=16000, return_tensors="np").input_features[0]
    padded = torch.zeros(1, CHUNK_SAMPLES)
    padded[0, : len(clip)] = torch.from_numpy(clip)
    ours = log_mel_spectrogram(padded, 128)[0].numpy()
    assert ours.shape == expected.shape == (128, 3000)
    np.testing.assert_allclose(ours, expected, atol=2e-4)


def test_log_mel_of_a_batch_is_each_row_on_its_own():
    a, b = noise_clip(2.0, seed=1), noise_clip(2.0, seed=2) * 0.1
    batch = log_mel_spectrogram(torch.from_numpy(np.stack([a, b])), 80)
    alone = log_mel_spectrogram(torch.from_numpy(b)[None], 80)
    # the floor (max - 8) is per row: a loud row beside a quiet one changes nothing
    torch.testing.assert_close(batch[1], alone[0], atol=1e-5, rtol=1e-5)


def test_split_chunks_cuts_30s_pieces_in_order():
    clip = np.arange(95 * 16000, dtype=np.float32)
    chunks = split_chunks(clip)
    assert [len(c) for c in chunks] == [480000, 480000, 480000, 80000]
    np.testing.assert_array_equal(np.concatenate(chunks), clip)
    assert split_chunks(np.zeros(0, np.float32)) == []
