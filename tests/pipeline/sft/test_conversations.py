"""The released fine-tuning format: lines parsed and refused with their reasons, instructions drawn from
the pools, and one conversation prepared in-process into a sample every reader understands."""
import json

import numpy as np
import pytest
import soundfile as sf

from jobs.build_models import build_semantic_tokenizer_tiny
from pipeline.inspect import main as shards_cli
from pipeline.sft.conversations import parse_jsonl, parse_line
from pipeline.sft.instructions import Instruction, InstructionPools
from pipeline.sft.prepare import PrepareSftConfig, decode_conversation, pack_conversation
from pipeline.shards import DatasetLayout, PipelineInfo, ShardWriter, iter_samples
from pipeline.shards.schema import ConversationRecord, SchemaError, parse_record
from pipeline.shards.verify import verify_dataset
from pipeline.stages.base import run_stage
from pipeline.stages.tokenize import TokenizeSettings, TokenizeStage
from pipeline.synthetic import speak

NO_POOLS = InstructionPools()


def line(task_type="understanding", *messages, **extra):
    return json.dumps({"task_type": task_type, "conversation": [
        {"role": r, "message_type": t, "content": c} for r, t, c in messages], **extra})


QUESTION = ("user", "audio", "clips/q.wav")
ANSWER = ("assistant", "text", "Two people talk about the weather.")


@pytest.mark.parametrize("text, reason", [
    ("{not json", "not JSON"),
    ("[1, 2]", "expected a JSON object"),
    (line("translation", QUESTION, ANSWER), "task_type 'translation' is not one of understanding, speech2speech"),
    (json.dumps({"task_type": "understanding", "conversation": []}), "non-empty list of messages"),
    (line("understanding", ("narrator", "text", "hi"), ANSWER), "message 0: role 'narrator'"),
    (line("understanding", ("user", "video", "x.mp4"), ANSWER), "message_type 'video'"),
    (line("understanding", ("user", "audio", ""), ANSWER), "message 0: content must be a non-empty string"),
    (line("understanding", ("user", "text", "hello"), ANSWER), "no audio message"),
    (line("understanding", ANSWER, QUESTION), "the last message must be the assistant's"),
    (line("understanding", QUESTION, ("assistant", "audio", "a.wav")), "answers in text"),
    (line("speech2speech", QUESTION, ANSWER), "needs an assistant message with audio"),
    (line("speech2speech", QUESTION, ("assistant", "audio-text", ["a.wav"])), "content is [AUDIO PATH, TEXT]"),
])
def test_a_bad_line_is_refused_with_its_number_and_reason(text, reason):
    plan = parse_line(text, "/data/sft.jsonl", 7, None, NO_POOLS, seed=0)
    assert plan.error.startswith("line 7: ") and reason in plan.error


def test_lines_parse_with_audio_resolved_and_instructions_drawn_from_the_pools():
    pools = InstructionPools({"understanding": [Instruction("Listen and answer.")],
                              "asr": [Instruction("Transcribe it.", audio="transcribe.wav")]},
                             spoken_fraction=1.0, folder="/pools")
    text = "\n".join([line("understanding", ("user", "text", "What is said?"), QUESTION, ANSWER), "",
                      line("understanding", QUESTION, ANSWER),
                      line("understanding", QUESTION, ANSWER, instruction_pool="asr"),
                      line("speech2speech", QUESTION, ("assistant", "audio-text", ["a.wav", "Fine, thanks."]))])
    plans = parse_jsonl(text, "s3://bucket/sft/train.jsonl", None, pools, seed=0)
    assert [p.line for p in plans] == [1, 3, 4, 5] and not any(p.error for p in plans)
    assert plans[0].messages[1].audio == "s3://bucket/sft/clips/q.wav"  # relative to the JSONL's folder
    assert plans[0].messages[0].text == "What is said?" and len(plans[0].messages) == 3  # has its own
    assert plans[1].messages[0].text == "Listen and answer."  # drawn, written (the entry has no audio)
    assert plans[2].messages[0].audio == "/pools/transcribe.wav"  # drawn from the named pool, spoken
    assert plans[3].messages[-1].text == "Fine, thanks." and plans[3].messages[-1].audio == "s3://bucket/sft/a.wav"
    again = parse_jsonl(text, "s3://bucket/sft/train.jsonl", None, pools, seed=0)
    assert again == plans and len({p.recording_id for p in plans}) == 4  # deterministic, one id per line


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory):
    return build_semantic_tokenizer_tiny(tmp_path_factory.mktemp("models"))


def test_a_conversation_becomes_one_sample_every_reader_understands(tmp_path, tokenizer_folder, capsys):
    clips = tmp_path / "clips"
    clips.mkdir()
    sf.write(clips / "q.wav", speak("What is the weather like?", "en-us", 16000), 16000)
    sf.write(clips / "a.wav", speak("It is cold and windy.", "en-gb", 22050), 22050)
    jsonl = tmp_path / "sft.jsonl"
    jsonl.write_text(line("speech2speech", ("user", "text", "Answer in speech."), QUESTION,
                          ("assistant", "audio-text", ["clips/a.wav", "It is cold and windy."])) + "\n")
    cfg = PrepareSftConfig(input=str(jsonl), output=str(tmp_path / "ds"),
                           tokenize=TokenizeSettings(model=str(tokenizer_folder), device="cpu"))
    [plan] = parse_jsonl(jsonl.read_text(), str(jsonl), None, NO_POOLS, seed=0)
    work = decode_conversation(plan, cfg)
    stage = TokenizeStage(cfg.tokenize, 16000)
    stage.setup()
    [work] = run_stage(stage, [work])
    packed = pack_conversation(work, PipelineInfo.for_config("test", {}))
    with ShardWriter(tmp_path / "ds") as writer:
        writer.add_encoded_recording(packed.samples)
    [sample] = list(iter_samples(tmp_path / "ds"))
    record = sample.record
    assert isinstance(record, ConversationRecord) and record.conversation.task_type == "speech2speech"
    question, answer = record.conversation.messages[1], record.conversation.messages[2]
    assert (question.first_sample, answer.first_sample) == (0, question.num_samples)
    assert len(sample.audio) == question.num_samples + answer.num_samples == record.audio.num_samples
    assert len(sample.tokens) == question.num_tokens + answer.num_tokens  # each message tokenized alone
    np.testing.assert_array_equal(sample.tokens[:question.num_tokens], work.segments[0].tokens)
    assert verify_dataset(DatasetLayout.of(tmp_path / "ds")) == (1, [])  # shards checked, problems
    assert shards_cli(["show", str(tmp_path / "ds"), record.key]) == 0
    shown = capsys.readouterr().out
    assert "conversation (speech2speech, line 1):" in shown and "It is cold and windy." in shown


def test_a_record_whose_message_ranges_do_not_add_up_is_refused(tmp_path):
    record = {"recording_id": "0123456789abcdef", "source": "x.jsonl", "segment_index": 0, "start": 0.0, "end": 1.0,
              "audio": {"sample_rate": 16000, "num_samples": 16000}, "pipeline": {"version": "0", "config_hash": "x"},
              "tokens": {"count": 13}, "schema": 1,
              "conversation": {"task_type": "understanding", "line": 1, "messages": [
                  {"role": "user", "message_type": "audio", "audio_source": "q.wav", "first_sample": 0,
                   "num_samples": 8000, "first_token": 0, "num_tokens": 13},
                  {"role": "assistant", "message_type": "text", "text": "hi"}]}}
    with pytest.raises(SchemaError, match="audio.num_samples: 16000, the messages hold 8000"):
        parse_record(record)
