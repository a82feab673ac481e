"""The released fine-tuning format, one JSONL line per conversation, parsed and checked into plans.

    {"task_type": "understanding",
     "conversation": [{"role": "user", "message_type": "text", "content": "What is said in the audio?"},
                      {"role": "user", "message_type": "audio", "content": "clips/0001.wav"},
                      {"role": "assistant", "message_type": "text", "content": "..."}]}

`task_type` is `understanding` (answers in text: ASR, audio question answering, captioning, emotion and
sound-event classification, audio-to-text chat) or `speech2speech` (the assistant answers in speech: a
message of type `audio`, or `audio-text` with content `[AUDIO, TEXT]`: the speech and its words, trained
aligned). Audio paths are local paths or storage URLs, relative ones against `audio_root` (default: the
JSONL's folder). A line that does not parse or breaks a rule becomes a plan with `error` set, recorded in
`failed/` with its line number, and the job goes on.
"""
from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, replace
from typing import Optional

from pipeline.sft.instructions import InstructionPools
from pipeline.shards.schema import MESSAGE_TYPES, ROLES, TASK_TYPES, recording_id_for
from pipeline.shards.storage import is_url


@dataclass(frozen=True)
class MessagePlan:
    role: str
    message_type: str
    text: Optional[str] = None
    audio: Optional[str] = None  # where to read it (resolved)


@dataclass(frozen=True)
class ConversationPlan:
    """One JSONL line: its id (the recording id of its samples), checked messages, or why it is refused."""
    source: str
    line: int
    recording_id: str
    task_type: str = ""
    messages: tuple[MessagePlan, ...] = ()
    error: Optional[str] = None


class ConversationError(ValueError):
    pass


def conversation_id(source: str, line: int) -> str:
    """A stable id per (JSONL, line): rerunning on the same file skips the lines already prepared."""
    return recording_id_for(f"{source}\n{line}")


def resolve_audio(path: str, source: str, audio_root: Optional[str]) -> str:
    if is_url(path) or posixpath.isabs(path):
        return path
    base = audio_root or posixpath.dirname(source)
    return posixpath.join(base, path) if base else path


def parse_message(raw, index: int, source: str, audio_root: Optional[str]) -> MessagePlan:
    where = f"message {index}"
    if not isinstance(raw, dict):
        raise ConversationError(f"{where}: expected an object")
    role, kind, content = raw.get("role"), raw.get("message_type"), raw.get("content")
    if role not in ROLES:
        raise ConversationError(f"{where}: role {role!r} is not one of {', '.join(ROLES)}")
    if kind not in MESSAGE_TYPES:
        raise ConversationError(f"{where}: message_type {kind!r} is not one of {', '.join(MESSAGE_TYPES)}")
    if kind == "audio-text":
        if not (isinstance(content, list) and len(content) == 2 and all(isinstance(c, str) and c.strip()
                                                                          for c in content)):
            raise ConversationError(f"{where}: an audio-text message's content is [AUDIO PATH, TEXT]")
        return MessagePlan(role, kind, text=content[1].strip(), audio=resolve_audio(content[0], source, audio_root))
    if not isinstance(content, str) or not content.strip():
        expected = "a path" if kind == "audio" else "text"
        raise ConversationError(f"{where}: content must be a non-empty string ({expected})")
    if kind == "audio":
        return MessagePlan(role, kind, audio=resolve_audio(content.strip(), source, audio_root))
    return MessagePlan(role, kind, text=content.strip())


def check_conversation(task_type: str, messages: list[MessagePlan]) -> None:
    if not any(m.audio for m in messages):
        raise ConversationError("no audio message: text-only conversations belong in a text corpus")
    if messages[-1].role != "assistant":
        raise ConversationError("the last message must be the assistant's (the answer trained on)")
    answers = [m for m in messages if m.role == "assistant"]
    if task_type == "understanding" and any(m.audio for m in answers):
        raise ConversationError("an understanding conversation answers in text; speech answers are speech2speech")
    if task_type == "speech2speech" and not any(m.audio for m in answers):
        raise ConversationError("a speech2speech conversation needs an assistant message with audio")


def with_instruction(plan: ConversationPlan, pool: str, pools: InstructionPools, seed: int) -> ConversationPlan:
    """A drawn instruction before the first message when the user's first turn has no text of its own."""
    first_turn = []
    for m in plan.messages:
        if m.role != "user":
            break
        first_turn.append(m)
    if any(m.text for m in first_turn):
        return plan
    drawn = pools.draw(pool, seed, plan.recording_id)
    if drawn is None:
        return plan
    text, audio = drawn
    instruction = MessagePlan("user", "audio", audio=audio) if audio else MessagePlan("user", "text", text=text)
    return replace(plan, messages=(instruction, *plan.messages))


def parse_line(text: str, source: str, line: int, audio_root: Optional[str], pools: InstructionPools,
               seed: int) -> ConversationPlan:
    """The plan of one line; a refused line's plan carries `error` (never raises)."""
    plan = ConversationPlan(source=source, line=line, recording_id=conversation_id(source, line))
    try:
        try:
            data = json.loads(text)
        except ValueError as e:
            raise ConversationError(f"not JSON ({e})") from None
        if not isinstance(data, dict):
            raise ConversationError("expected a JSON object")
        task_type, conversation = data.get("task_type"), data.get("conversation")
        if task_type not in TASK_TYPES:
            raise ConversationError(f"task_type {task_type!r} is not one of {', '.join(TASK_TYPES)}")
        if not isinstance(conversation, list) or not conversation:
            raise ConversationError("conversation must be a non-empty list of messages")
        messages = [parse_message(m, i, source, audio_root) for i, m in enumerate(conversation)]
        check_conversation(task_type, messages)
        pool = data.get("instruction_pool") or task_type
        if not isinstance(pool, str):
            raise ConversationError("instruction_pool must be a pool name")
    except ConversationError as e:
        return replace(plan, error=f"line {line}: {e}")
    return with_instruction(replace(plan, task_type=task_type, messages=tuple(messages)), pool, pools, seed)


def parse_jsonl(text: str, source: str, audio_root: Optional[str], pools: InstructionPools,
                seed: int) -> list[ConversationPlan]:
    """Plans of every non-blank line, numbered from 1 as an editor shows them."""
    return [parse_line(raw, source, number, audio_root, pools, seed)
            for number, raw in enumerate(text.splitlines(), 1) if raw.strip()]
