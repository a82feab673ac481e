"""The report's seven pretraining tasks (Table 3) as token layouts of two aligned streams.

A task sample is built from a window of consecutive segments of one recording (or a text document).
Each segment contributes pieces; every piece fills both streams to the same length (blanks pad the
shorter one) and marks the positions each head must predict:

    a_i    continuous + discrete audio: A = media_begin, ids, media_end; T = blanks; Whisper features
           of the segment's audio added at the ids (no loss)
    ad_i   discrete audio: A = ids; T = blanks; audio loss on the ids when it is a target
    t_i    text: T = ids, eos; A = blanks; text loss when it is a target
    ad/t_i both: A = 6 blanks, ids; T = ids, eos; padded with blanks; audio and text loss

Tasks (report order, weights 1:7:1:1:1:1:2): audio_only (ad...), text_only (t), asr (a, t, ...),
tts (t, ad, ...), audio_semantic (a, ad, a, ad...), audio_text (a, t, a, t...),
audio_semantic_text (a, ad/t, a, ad/t...). Fine-tuning adds sft_asr, the released ASR layout (facts
B6-B7): user turn (instruction, audio, ct, msg_end), assistant start, transcript + eos (loss), msg_end.

Conversations (jobs.prepare_sft; tasks sft_understanding and sft_speech2speech) follow the released
prompt manager (facts B6) message by message, with loss on the assistant's turns only (B7):

    role token    A = user_start / assistant_start, T = blank, when the role changes (so the prompt ends
                  with assistant_start)
    user text     T = ids, A = blanks
    user audio    A = media_begin, ids, media_end (continuous: Whisper features at the ids), T = blanks
    end of a user run with audio: A = ct (answer in text: understanding) or ctd (text and speech:
                  speech2speech), T = blank; every run then ends with A = msg_end, T = blank
    assistant text        T = ids, eos (text loss), A = blanks
    assistant audio       A = 6 blanks, ids, media_end (audio loss on the ids and media_end), T = blanks
    assistant audio-text  both at once: A as assistant audio, T = ids, eos (text loss), the shorter
                  stream padded with blanks; the speech is discrete only, as generation feeds it back
                  (the released fine-tuning code trains ASR only and has no speech-output layout)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

TASKS = ("audio_only", "text_only", "asr", "tts", "audio_semantic", "audio_text", "audio_semantic_text",
         "sft_asr", "sft_understanding", "sft_speech2speech")
TASKS_NEEDING_TEXT = ("asr", "tts", "audio_text", "audio_semantic_text", "sft_asr")
# built from a prepared conversation sample (its task type names the task), never from segments
CONVERSATION_TASKS = ("sft_understanding", "sft_speech2speech")


@dataclass(frozen=True)
class SpecialIds:
    """Ids of the layout's special tokens and where the audio range starts (facts B1 for the 7B model)."""
    blank: int
    text_eos: int
    media_begin: int
    media_end: int
    audio_offset: int
    audio_vocab_size: int = 16384  # semantic tokenizer ids: audio ids run from audio_offset for this many
    audio_delay: int = 6
    user_start: int = 151670       # <|im_kimia_user_msg_start|>
    assistant_start: int = 151671  # <|im_kimia_assistant_msg_start|>
    speech_ct: int = 151675        # <|im_kimia_speech_ct_id|>: the answer is text
    msg_end: int = 151645          # <|im_msg_end|>
    speech_ctd: int = 151676       # <|im_kimia_speech_ctd_id|>: the answer is text and speech


@dataclass(frozen=True)
class SegmentInput:
    """One curated segment as the task builder sees it."""
    semantic_ids: np.ndarray            # tokenizer ids, 12.5 Hz (without the audio offset)
    text_ids: Optional[Sequence[int]]   # tokenised transcript; None when the dataset has no text
    audio: Optional[np.ndarray] = None  # 16 kHz audio for the Whisper features (original or enhanced)


@dataclass
class TaskSample:
    """Two aligned streams, the positions each head predicts, continuous positions and their audio."""
    task: str
    audio_ids: np.ndarray
    text_ids: np.ndarray
    audio_targets: np.ndarray
    text_targets: np.ndarray
    continuous: np.ndarray
    clips: list = field(default_factory=list)  # one audio clip per continuous span, in order
    origin: dict = field(default_factory=dict)  # where it came from (trainer.data.stream): dataset, epoch, keys

    def __len__(self) -> int:
        return len(self.audio_ids)


class _Builder:
    def __init__(self, task: str, ids: SpecialIds):
        self.task, self.ids = task, ids
        self.a, self.t, self.at, self.tt, self.cont, self.clips = [], [], [], [], [], []

    def piece(self, audio: list, text: list, audio_target: list, text_target: list, continuous: list) -> None:
        n = max(len(audio), len(text))
        pad = lambda xs, fill: xs + [fill] * (n - len(xs))  # noqa: E731
        self.a += pad(audio, self.ids.blank)
        self.t += pad(text, self.ids.blank)
        self.at += pad(audio_target, False)
        self.tt += pad(text_target, False)
        self.cont += pad(continuous, False)

    def continuous(self, seg: SegmentInput) -> None:
        n = len(seg.semantic_ids)
        self.piece([self.ids.media_begin, *(seg.semantic_ids + self.ids.audio_offset).tolist(), self.ids.media_end],
                   [], [], [], [False] + [True] * n + [False])
        self.clips.append(seg.audio)

    def discrete(self, seg: SegmentInput, target: bool = True) -> None:
        ids = (seg.semantic_ids + self.ids.audio_offset).tolist()
        self.piece(ids, [], [target] * len(ids), [], [])

    def text(self, text_ids: Sequence[int], target: bool = True) -> None:
        t = [*text_ids, self.ids.text_eos]
        self.piece([], t, [], [target] * len(t), [])

    def discrete_and_text(self, seg: SegmentInput) -> None:
        delay = self.ids.audio_delay
        ids = (seg.semantic_ids + self.ids.audio_offset).tolist()
        t = [*seg.text_ids, self.ids.text_eos]
        self.piece([self.ids.blank] * delay + ids, t, [False] * delay + [True] * len(ids), [True] * len(t), [])

    def sft_asr(self, seg: SegmentInput, instruction: Sequence[int]) -> None:
        ids = self.ids
        self.piece([ids.user_start], [], [], [], [])
        self.piece([], list(instruction), [], [], [])
        self.continuous(seg)
        self.piece([ids.speech_ct, ids.msg_end, ids.assistant_start], [], [], [], [])
        self.text(seg.text_ids)
        self.piece([ids.msg_end], [], [], [], [])

    def build(self) -> TaskSample:
        return TaskSample(self.task, np.asarray(self.a, np.int64), np.asarray(self.t, np.int64),
                          np.asarray(self.at, bool), np.asarray(self.tt, bool), np.asarray(self.cont, bool),
                          self.clips)


def build_task(task: str, segments: Sequence[SegmentInput], ids: SpecialIds,
               instruction: Sequence[int] = ()) -> TaskSample:
    """The task's layout over a window of consecutive segments (see the module docstring);
    `instruction` is the tokenised user prompt of sft_asr."""
    if task not in TASKS or task == "text_only" or task in CONVERSATION_TASKS:
        raise ValueError(f"{task!r} is not a task over audio segments; text_only uses build_text_only")
    if task in TASKS_NEEDING_TEXT and any(s.text_ids is None for s in segments):
        raise ValueError(f"task {task} needs transcripts")
    b = _Builder(task, ids)
    if task == "sft_asr":
        if len(segments) != 1:
            raise ValueError("sft_asr takes one segment per sample")
        b.sft_asr(segments[0], instruction)
        return b.build()
    for index, seg in enumerate(segments):
        odd = index % 2 == 1  # interleaving tasks alternate: a1, x2, a3, x4, ...
        if task == "audio_only":
            b.discrete(seg)
        elif task == "asr":
            b.continuous(seg)
            b.text(seg.text_ids)
        elif task == "tts":
            b.text(seg.text_ids, target=False)
            b.discrete(seg)
        elif not odd:
            b.continuous(seg)
        elif task == "audio_semantic":
            b.discrete(seg)
        elif task == "audio_text":
            b.text(seg.text_ids)
        else:
            b.discrete_and_text(seg)
    return b.build()


@dataclass(frozen=True)
class ConversationTurn:
    """One message as the layout sees it: text ids and/or semantic ids (without the audio offset) with the
    audio for the Whisper features of a user's audio."""
    role: str
    text_ids: Optional[Sequence[int]] = None
    semantic_ids: Optional[np.ndarray] = None
    audio: Optional[np.ndarray] = None


def build_conversation(task_type: str, turns: Sequence[ConversationTurn], ids: SpecialIds) -> TaskSample:
    """A prepared conversation's two streams (see the module docstring); `task_type` is understanding or
    speech2speech (which also picks ct or ctd at the end of a user run with audio)."""
    b = _Builder(f"sft_{task_type}", ids)
    answer_mode = ids.speech_ctd if task_type == "speech2speech" else ids.speech_ct
    run_has_audio = False  # the current same-role run holds an audio message
    for index, turn in enumerate(turns):
        if index == 0 or turns[index - 1].role != turn.role:
            b.piece([ids.user_start if turn.role == "user" else ids.assistant_start], [], [], [], [])
            run_has_audio = False
        run_has_audio |= turn.semantic_ids is not None
        if turn.role == "user":
            if turn.text_ids is not None:
                b.piece([], list(turn.text_ids), [], [], [])
            if turn.semantic_ids is not None:
                b.continuous(SegmentInput(np.asarray(turn.semantic_ids, np.int64), None, turn.audio))
        else:
            audio, audio_target = [], []
            if turn.semantic_ids is not None:
                speech = (np.asarray(turn.semantic_ids, np.int64) + ids.audio_offset).tolist()
                audio = [ids.blank] * ids.audio_delay + speech + [ids.media_end]
                audio_target = [False] * ids.audio_delay + [True] * (len(speech) + 1)
            text = [*turn.text_ids, ids.text_eos] if turn.text_ids is not None else []
            b.piece(audio, text, audio_target, [True] * len(text), [])
        if index == len(turns) - 1 or turns[index + 1].role != turn.role:  # the run ends here
            if turn.role == "user" and run_has_audio:
                b.piece([answer_mode], [], [], [], [])
            b.piece([ids.msg_end], [], [], [], [])
    return b.build()


def build_text_only(text_ids: Sequence[int], ids: SpecialIds) -> TaskSample:
    b = _Builder("text_only", ids)
    b.text(text_ids)
    return b.build()


def draw_task(rng: np.random.Generator, weights: dict[str, float], has_text: bool) -> str:
    """A task over segments by the configured weights; without transcripts, only tasks that need none."""
    names = [t for t in TASKS if weights.get(t, 0) > 0 and t not in CONVERSATION_TASKS
             and (has_text or t not in TASKS_NEEDING_TEXT)]
    p = np.asarray([weights[t] for t in names], float)
    return names[int(rng.choice(len(names), p=p / p.sum()))]
