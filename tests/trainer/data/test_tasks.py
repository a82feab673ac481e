"""Task layouts against the facts file and the report's Table 3, and the mixture frequencies."""
import numpy as np
import pytest

from trainer.data.tasks import (
    TASKS, ConversationTurn, SegmentInput, SpecialIds, build_conversation, build_task, build_text_only, draw_task,
)

# the released ids (facts B1)
IDS = SpecialIds(blank=151666, text_eos=151667, media_begin=151661, media_end=151663, audio_offset=152064)
B, EOS, MB, ME, OFF = IDS.blank, IDS.text_eos, IDS.media_begin, IDS.media_end, IDS.audio_offset


def seg(ids, text, seconds=1.0):
    return SegmentInput(np.asarray(ids), text, np.zeros(int(seconds * 16000), np.float32))


def test_asr_layout_matches_the_released_prompt_shape():
    s = build_task("asr", [seg([5, 6, 7], [11, 12])], IDS)
    # audio between media markers (continuous), then the transcript with eos on the text stream
    assert s.audio_ids.tolist() == [MB, OFF + 5, OFF + 6, OFF + 7, ME, B, B, B]
    assert s.text_ids.tolist() == [B, B, B, B, B, 11, 12, EOS]
    assert s.continuous.tolist() == [False, True, True, True, False, False, False, False]
    assert s.text_targets.tolist() == [False] * 5 + [True] * 3  # loss on the transcript and eos only
    assert not s.audio_targets.any() and len(s.clips) == 1


def test_tts_predicts_discrete_audio_after_the_text():
    s = build_task("tts", [seg([5, 6, 7], [11])], IDS)
    assert s.text_ids.tolist() == [11, EOS, B, B, B]
    assert s.audio_ids.tolist() == [B, B, OFF + 5, OFF + 6, OFF + 7]
    assert s.audio_targets.tolist() == [False, False, True, True, True] and not s.text_targets.any()
    assert not s.continuous.any() and s.clips == []


def test_semantic_and_text_interleaving_delays_the_audio_by_six_blanks():
    s = build_task("audio_semantic_text", [seg([1, 2], [9]), seg([3, 4, 5], [11, 12])], IDS)
    first = 4  # media_begin, 2 ids, media_end
    assert s.continuous[:first].tolist() == [False, True, True, False]
    assert s.audio_ids[first:].tolist() == [B] * 6 + [OFF + 3, OFF + 4, OFF + 5]
    assert s.text_ids[first:].tolist() == [11, 12, EOS] + [B] * 6  # the shorter stream padded with blanks
    assert s.audio_targets[first:].tolist() == [False] * 6 + [True] * 3
    assert s.text_targets[first:].tolist() == [True] * 3 + [False] * 6
    assert not s.audio_targets[:first].any() and not s.text_targets[:first].any()  # no loss on a1


@pytest.mark.parametrize("task, second", [("audio_semantic", "discrete"), ("audio_text", "text")])
def test_interleaving_alternates_continuous_and_target_segments(task, second):
    segs = [seg([1, 2], [7]), seg([3, 4], [8]), seg([5], [9]), seg([6], [10])]
    s = build_task(task, segs, IDS)
    assert len(s.clips) == 2 and int(s.continuous.sum()) == 3  # segments 1 and 3 are continuous
    if second == "discrete":
        assert s.audio_ids[s.audio_targets].tolist() == [OFF + 3, OFF + 4, OFF + 6]
    else:
        assert s.text_ids[s.text_targets].tolist() == [8, EOS, 10, EOS]


def test_audio_only_and_text_only():
    a = build_task("audio_only", [seg([1, 2], None), seg([3], None)], IDS)
    assert a.audio_ids.tolist() == [OFF + 1, OFF + 2, OFF + 3] and a.audio_targets.all()
    assert (a.text_ids == B).all() and not a.text_targets.any()
    t = build_text_only([4, 5, 6], IDS)
    assert t.text_ids.tolist() == [4, 5, 6, EOS] and t.text_targets.all() and (t.audio_ids == B).all()


def test_tasks_needing_text_refuse_segments_without_it():
    with pytest.raises(ValueError, match="needs transcripts"):
        build_task("asr", [seg([1], None)], IDS)


def test_mixture_frequencies_follow_the_weights():
    weights = dict(zip(TASKS, [1, 7, 1, 1, 1, 1, 2]))
    rng = np.random.default_rng(0)
    draws = [draw_task(rng, weights, has_text=True) for _ in range(28000)]
    for task, w in weights.items():
        assert draws.count(task) / len(draws) == pytest.approx(w / 14, abs=0.01)
    no_text = {draw_task(rng, weights, has_text=False) for _ in range(2000)}
    assert no_text == {"audio_only", "text_only", "audio_semantic"}


def test_sft_asr_follows_the_released_prompt_table():
    s = build_task("sft_asr", [seg([5, 6], [11, 12])], IDS, instruction=[21, 22])
    blank = B
    # facts B6 (ASR prompt) + B7 (SFT: transcript + eos, then msg_end)
    assert s.audio_ids.tolist() == [151670, blank, blank, MB, OFF + 5, OFF + 6, ME, 151675, 151645, 151671,
                                    blank, blank, blank, 151645]
    assert s.text_ids.tolist() == [blank, 21, 22, blank, blank, blank, blank, blank, blank, blank, 11, 12, EOS,
                                   blank]
    assert s.text_ids[s.text_targets].tolist() == [11, 12, EOS] and not s.audio_targets.any()
    assert s.continuous.tolist() == [False] * 4 + [True, True] + [False] * 8


# ---- conversations (jobs.prepare_sft): the released prompt manager's layout, token by token ----------

US, AS, CT, CTD, END = IDS.user_start, IDS.assistant_start, IDS.speech_ct, IDS.speech_ctd, IDS.msg_end


def turn(role, text=None, semantic=None):
    audio = None if semantic is None else np.zeros(1280 * len(semantic), np.float32)
    return ConversationTurn(role, text, None if semantic is None else np.asarray(semantic), audio)


def test_an_understanding_conversation_answers_in_text_with_loss_on_the_answer_only():
    s = build_conversation("understanding", [turn("user", text=[11, 12]), turn("user", semantic=[5, 6, 7]),
                                             turn("assistant", text=[21, 22])], IDS)
    assert s.task == "sft_understanding"
    assert s.audio_ids.tolist() == [US, B, B, MB, OFF + 5, OFF + 6, OFF + 7, ME, CT, END, AS, B, B, B, END]
    assert s.text_ids.tolist() == [B, 11, 12, B, B, B, B, B, B, B, B, 21, 22, EOS, B]
    assert np.flatnonzero(s.continuous).tolist() == [4, 5, 6] and len(s.clips) == 1
    assert np.flatnonzero(s.text_targets).tolist() == [11, 12, 13] and not s.audio_targets.any()


def test_the_instruction_layout_equals_the_released_asr_layout():
    # sft_asr is the understanding layout of (instruction, audio) -> transcript
    asr = build_task("sft_asr", [seg([5, 6], [21])], IDS, instruction=[11, 12])
    conversation = build_conversation("understanding", [turn("user", text=[11, 12]), turn("user", semantic=[5, 6]),
                                                        turn("assistant", text=[21])], IDS)
    for stream in ("audio_ids", "text_ids", "audio_targets", "text_targets", "continuous"):
        assert getattr(asr, stream).tolist() == getattr(conversation, stream).tolist(), stream


def test_a_speech_answer_is_delayed_six_blanks_and_trained_on_both_heads():
    s = build_conversation("speech2speech", [turn("user", semantic=[5, 6]),
                                             turn("assistant", text=[31], semantic=[8, 9])], IDS)
    assert s.audio_ids.tolist() == [US, MB, OFF + 5, OFF + 6, ME, CTD, END, AS] + [B] * 6 + [OFF + 8, OFF + 9, ME, END]
    assert s.text_ids.tolist() == [B] * 8 + [31, EOS] + [B] * 8
    assert np.flatnonzero(s.audio_targets).tolist() == [14, 15, 16]  # the speech and its media_end
    assert np.flatnonzero(s.text_targets).tolist() == [8, 9]
    assert np.flatnonzero(s.continuous).tolist() == [2, 3]  # only the user's audio gets Whisper features
    assert len(s.clips) == 1


def test_every_assistant_turn_of_a_multi_turn_conversation_is_a_target():
    s = build_conversation("understanding", [turn("user", semantic=[5]), turn("assistant", text=[21]),
                                             turn("user", text=[12]), turn("assistant", text=[22, 23])], IDS)
    assert s.audio_ids.tolist() == [US, MB, OFF + 5, ME, CT, END, AS, B, B, END, US, B, END, AS, B, B, B, END]
    assert s.text_ids.tolist() == [B, B, B, B, B, B, B, 21, EOS, B, B, 12, B, B, 22, 23, EOS, B]
    assert s.text_ids[s.text_targets].tolist() == [21, EOS, 22, 23, EOS]  # a text-only user turn gets no ct


def test_conversation_tasks_are_never_drawn_for_segments():
    rng = np.random.default_rng(0)
    weights = {"sft_asr": 1.0, "sft_understanding": 5.0, "sft_speech2speech": 5.0}
    assert {draw_task(rng, weights, has_text=True) for _ in range(50)} == {"sft_asr"}
    with pytest.raises(ValueError, match="not a task over audio segments"):
        build_task("sft_understanding", [seg([1], [2])], IDS)
