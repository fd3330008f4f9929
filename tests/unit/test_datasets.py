"""Dataset line formats: acceptance, conversion to ms-swift's JSONL, error wording, streaming, models."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from daemon.core import datasets
from daemon.core.datasets import DatasetReport, DatasetValidator, LineError, can_feed, line_models
from tests.seeds import SEED_RL_DATA

BOM = b"\xef\xbb\xbf"


def run(
    name: str,
    data: bytes,
    *,
    chunk: int = 1 << 20,
    max_line_bytes: int = 16 * 1024 * 1024,
    max_errors: int = 20,
) -> tuple[list[bytes], DatasetReport]:
    validator = DatasetValidator(name, max_line_bytes=max_line_bytes, max_errors=max_errors)
    out: list[bytes] = []
    for start in range(0, len(data), chunk):
        out += validator.feed(data[start : start + chunk])
    out += validator.flush()
    return out, validator.finish()


def lines(*rows: str | dict[str, Any]) -> bytes:
    text = (row if isinstance(row, str) else json.dumps(row, ensure_ascii=False) for row in rows)
    return "".join(f"{row}\n" for row in text).encode()


def accepted(name: str, *rows: str | dict[str, Any]) -> tuple[list[str], DatasetReport]:
    out, report = run(name, lines(*rows))
    assert report.ok, report.errors
    assert report.rows == len(out)
    return [line.decode() for line in out], report


def only_error(name: str, data: bytes, **options: int) -> LineError:
    _, report = run(name, data, **options)
    assert report.error_count == 1, report.errors
    return report.errors[0]


def chat(*turns: tuple[str, Any]) -> list[dict[str, Any]]:
    return [{"role": role, "content": content} for role, content in turns]


QA_TURNS = (("user", "2+2?"), ("assistant", "4"))
QA = chat(*QA_TURNS)
QA_LINE = '{"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}\n'


# --- every format, accepted and converted ---------------------------------------------------------


def test_sft_messages_pass_through_unchanged() -> None:
    row = '{"messages":[{"role":"system","content":"s"},{"role":"user","content":"中文"},{"role":"assistant","content":"好"}]}'
    out, report = accepted("sft.jsonl", row)
    assert out == [row + "\n"]
    assert report.format == "sft_messages"
    assert report.task_types == ["sft", "lora", "rl"]
    assert report.rlhf_types == ["ppo", "grpo"]


def test_sft_bookkeeping_is_dropped_and_system_prompt_and_template_applied() -> None:
    row = {
        "conversation_id": "c1",
        "system_prompt": "Be brief.",
        "input_template": "Q: {input}",
        "messages": QA,
        "task_tags": ["math"],
        "metadata": {"source": "x"},
    }
    out, _ = accepted("sft.jsonl", row)
    assert out == [
        '{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q: 2+2?"}, '
        '{"role": "assistant", "content": "4"}]}\n'
    ]


def test_system_prompt_does_not_override_a_system_message() -> None:
    out, _ = accepted(
        "sft.jsonl", {"system_prompt": "ignored", "messages": chat(("system", "kept"), *QA_TURNS)}
    )
    assert json.loads(out[0])["messages"][0] == {"role": "system", "content": "kept"}


def test_lora_messages_convert_and_give_hints() -> None:
    rows = [{"messages": QA, "target_modules": ["q_proj", "v_proj"], "rank": 8}, {"messages": QA, "rank": 8}]
    out, report = accepted("lora.jsonl", *rows)
    assert out == [QA_LINE, QA_LINE]
    assert report.format == "lora_messages"
    assert report.lora_hints is not None
    assert report.lora_hints.target_modules == ["q_proj", "v_proj"]
    assert report.lora_hints.rank == 8


def test_lora_hints_disagreeing_rows_give_none() -> None:
    rows = [{"messages": QA, "rank": 8}, {"messages": QA, "rank": 16}]
    _, report = accepted("lora.jsonl", *rows)
    assert report.lora_hints is None


def test_sft_file_becomes_lora_when_a_later_row_carries_lora_keys() -> None:
    _, report = accepted("mixed.jsonl", {"messages": QA}, {"messages": QA, "rank": 4})
    assert report.format == "lora_messages"
    assert report.lora_hints is not None and report.lora_hints.rank == 4


def test_pretrain_text() -> None:
    out, report = accepted(
        "pt.jsonl", {"doc_id": "d1", "text": "第一段", "metadata": {"domain": "x"}}, {"text": "b"}
    )
    assert out == ['{"text": "第一段"}\n', '{"text": "b"}\n']
    assert report.format == "pretrain_text"
    assert report.task_types == ["pretrain"]
    assert report.rlhf_types == []


def test_plain_text_file_one_document_per_non_blank_line() -> None:
    out, report = run("corpus.txt", b'first "quoted" line\n\n   \nsecond\twith tab\r\nlast')
    assert [line.decode() for line in out] == [
        '{"text": "first \\"quoted\\" line"}\n',
        '{"text": "second\\twith tab"}\n',
        '{"text": "last"}\n',
    ]
    assert report.ok
    assert report.format == "plain_text"
    assert report.stats.characters == len('first "quoted" line') + len("second\twith tab") + len("last")


def test_pretrain_messages() -> None:
    row = '{"messages": [{"role": "assistant", "content": "I love music"}]}'
    out, report = accepted("pt.jsonl", row)
    assert out == [row + "\n"]
    assert report.format == "pretrain_messages"
    assert report.task_types == ["pretrain"]


def test_preference_pair() -> None:
    row = {"prompt": "p", "chosen": "good", "rejected": "bad", "system": "sys", "metadata": {"a": 1}}
    out, report = accepted("pref.jsonl", row)
    assert out == [
        '{"messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "p"}, '
        '{"role": "assistant", "content": "good"}], "rejected_response": "bad"}\n'
    ]
    assert report.format == "preference"
    assert report.task_types == ["rl"]
    assert report.rlhf_types == ["dpo", "orpo", "simpo", "cpo", "rm", "ppo", "grpo"]
    assert report.stats.preference is not None
    assert report.stats.preference.chosen_chars_mean == 4
    assert report.stats.preference.rejected_chars_mean == 3


def test_scored_responses_best_is_chosen_worst_rejected_first_listed_wins_ties() -> None:
    responses = [
        {"content": "mid", "score": 0.5},
        {"content": "top", "score": 1},
        {"content": "top2", "score": 1},
    ]
    responses += [{"content": "low", "score": -2}, {"content": "low2", "score": -2}]
    out, report = accepted("scored.jsonl", {"prompt": "p", "responses": responses})
    assert out == [
        '{"messages": [{"role": "user", "content": "p"}, {"role": "assistant", "content": "top"}], '
        '"rejected_response": "low"}\n'
    ]
    assert report.format == "scored_responses"


def test_swift_preference_with_rejected_response_and_with_rejected_messages() -> None:
    row = {"messages": QA, "rejected_response": "5"}
    out, report = accepted("dpo.jsonl", row)
    assert out == [json.dumps(row, ensure_ascii=False) + "\n"]
    assert report.format == "swift_preference"
    row = {"messages": QA, "rejected_messages": chat(("user", "2+2?"), ("assistant", "5"))}
    out, _ = accepted("dpo.jsonl", row)
    assert out == [json.dumps(row, ensure_ascii=False) + "\n"]


def test_kto() -> None:
    row = {"messages": QA, "label": False}
    out, report = accepted("kto.jsonl", row)
    assert out == [
        '{"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}], "label": false}\n'
    ]
    assert report.format == "kto"
    assert report.rlhf_types == ["kto"]


def test_tool_turns_and_swift_message_extras_are_accepted() -> None:
    messages = chat(
        ("user", "weather?"),
        ("assistant", "call"),
        ("tool", "sunny"),
        ("tool", "warm"),
        ("assistant", "Sunny."),
    )
    messages[1]["loss"] = False
    messages[4]["loss_scale"] = 2
    out, report = accepted("tools.jsonl", {"messages": messages})
    assert json.loads(out[0]) == {"messages": messages}
    assert report.stats.role_counts == {"assistant": 2, "tool": 2, "user": 1}


def test_stats() -> None:
    rows = [{"messages": QA}, {"messages": chat(("system", "s"), *QA_TURNS, *QA_TURNS)}]
    _, report = accepted("sft.jsonl", *rows)
    assert report.stats.rows == 2
    assert report.stats.characters == 5 + 1 + 10
    assert report.stats.turns is not None
    assert (report.stats.turns.min, report.stats.turns.mean, report.stats.turns.max) == (2, 3.5, 5)
    assert report.stats.role_counts == {"assistant": 3, "system": 1, "user": 3}


def test_stats_survive_folding_many_role_patterns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets.stats, "_ROLE_PATTERNS_KEPT", 2)
    patterns = ["ua", "uaua", "sua", "uata", "ua", "suaua"]
    names = {"s": "system", "u": "user", "a": "assistant", "t": "tool"}
    rows = [{"messages": chat(*((names[letter], "x") for letter in pattern))} for pattern in patterns]
    _, report = accepted("sft.jsonl", *rows)
    assert report.stats.turns is not None
    assert (report.stats.turns.min, report.stats.turns.mean, report.stats.turns.max) == (2, 3.33, 5)
    assert report.stats.role_counts == {"assistant": 9, "system": 2, "tool": 1, "user": 8}


# --- the example lines of the management API's seed document and of the ms-swift recipe ------------

SEED_FILES = {
    "sft": [
        '{"conversation_id": "demo-001", "messages": [{"role": "user", "content": "指令"}, {"role": "assistant", "content": "回答"}], "task_tags": ["qa"], "metadata": {"language": "zh"}}',
        '{"conversation_id": "demo-002", "messages": [{"role": "user", "content": "请总结"}, {"role": "assistant", "content": "总结内容"}]}',
    ],
    "rl_pairs": [
        '{"prompt": "请写一首短诗", "chosen": "春风拂面...", "rejected": "我不知道", "metadata": {"source": "beta-feedback"}}'
    ],
    "rl_scored": [
        '{"prompt": "翻译：Hello", "responses": [{"content": "你好", "score": 0.9}, {"content": "您好", "score": 0.7}]}'
    ],
    "lora": [
        '{"conversation_id": "lora-001", "messages": [{"role": "user", "content": "写一封感谢信"}, {"role": "assistant", "content": "亲爱的团队..."}], "target_modules": ["q_proj", "v_proj"], "rank": 8}'
    ],
    "pretrain": [
        '{"doc_id": "pt-0001", "text": "大模型预训练语料第一段...", "metadata": {"domain": "finance"}}',
        '{"doc_id": "pt-0002", "text": "第二段语料..."}',
    ],
    "swift_dpo": [
        '{"messages": [{"role": "user", "content": "What is 49 plus 97?"}, {"role": "assistant", "content": "49 plus 97 is 146."}], "rejected_response": "I do not know what 49 plus 97 is."}'
    ],
    "swift_pt": [
        '{"messages": [{"role": "assistant", "content": "What is 49 plus 97? 49 plus 97 is 146."}]}'
    ],
}
SEED_FORMATS = {
    "sft": "sft_messages",
    "rl_pairs": "preference",
    "rl_scored": "scored_responses",
    "lora": "lora_messages",
    "pretrain": "pretrain_text",
    "swift_dpo": "swift_preference",
    "swift_pt": "pretrain_messages",
}


@pytest.mark.parametrize("name", sorted(SEED_FILES))
def test_seed_examples_are_accepted(name: str) -> None:
    _, report = accepted(f"{name}.jsonl", *SEED_FILES[name])
    assert report.format == SEED_FORMATS[name]
    assert report.rows == len(SEED_FILES[name])


def test_seed_rl_file_mixes_a_pair_and_scored_responses() -> None:
    out, report = run("rl_preference.jsonl", SEED_RL_DATA.encode())
    assert report.ok, report.errors
    assert [json.loads(line) for line in out] == [
        {
            "messages": [
                {"role": "user", "content": "请写一首短诗"},
                {"role": "assistant", "content": "春风拂面..."},
            ],
            "rejected_response": "我不知道",
        },
        {
            "messages": [
                {"role": "user", "content": "翻译：Hello"},
                {"role": "assistant", "content": "你好"},
            ],
            "rejected_response": "您好",
        },
    ]
    assert report.format == "preference"
    assert report.rlhf_types == ["dpo", "orpo", "simpo", "cpo", "rm", "ppo", "grpo"]
    assert report.stats.preference is not None
    assert report.stats.preference.from_scored_responses == 1


def test_a_file_of_scored_rows_becomes_preference_once_a_pair_row_comes() -> None:
    scored = {"prompt": "p", "responses": [{"content": "a", "score": 1}, {"content": "b", "score": 0}]}
    pair = {"prompt": "p", "chosen": "a", "rejected": "b"}
    _, report = accepted("rl.jsonl", scored, scored, pair)
    assert report.format == "preference"
    assert report.stats.preference is not None
    assert report.stats.preference.from_scored_responses == 2
    _, report = accepted("rl.jsonl", pair, pair)
    assert report.stats.preference is not None
    assert report.stats.preference.from_scored_responses == 0


def test_a_mixed_rl_file_names_each_row_that_cannot_become_a_pair() -> None:
    data = lines(
        {"prompt": "p", "chosen": "a", "rejected": "b"},
        {"prompt": "p", "responses": [{"content": "only", "score": 1}]},
        {"prompt": "p", "responses": [{"content": "a", "score": 0.5}, {"content": "b", "score": 0.5}]},
        {"prompt": "p", "responses": [{"content": "a", "score": 2}, {"content": "b", "score": 1}]},
    )
    _, report = run("rl.jsonl", data)
    assert report.rows == 2
    assert [(e.line, e.field) for e in report.errors] == [(2, "responses"), (3, "responses")]
    assert report.errors[0].message == "line 2, responses: needs at least 2 responses to compare, not 1"
    assert report.errors[1].message == (
        "line 3, responses: all 2 responses have the same score (0.5), so none is preferred"
    )


def test_pairs_and_scored_rows_still_do_not_mix_with_other_formats() -> None:
    scored = {"prompt": "p", "responses": [{"content": "a", "score": 1}, {"content": "b", "score": 0}]}
    data = lines(scored, {"messages": QA}, {"messages": QA, "rejected_response": "5"})
    _, report = run("rl.jsonl", data)
    assert report.format == "scored_responses"
    assert [e.line for e in report.errors] == [2, 3]
    assert "detected as scored_responses from line 1" in report.errors[1].message


response_rows = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(-2, 2)), min_size=0, max_size=4
)
rl_rows = st.lists(
    st.one_of(
        st.tuples(st.just("pair"), st.sampled_from(["a", "b"]), st.sampled_from(["a", "b", "c"])),
        st.tuples(st.just("scored"), response_rows),
    ),
    min_size=1,
    max_size=8,
)


def expected_pair(row: tuple[Any, ...]) -> tuple[str, str] | None:
    """What the row becomes as (chosen, rejected), worked out the plain way; None when it is refused."""
    if row[0] == "pair":
        return None if row[1] == row[2] else (row[1], row[2])
    responses: list[tuple[str, int]] = row[1]
    if len(responses) < 2:
        return None
    scores = [score for _, score in responses]
    best = responses[scores.index(max(scores))][0]
    worst = responses[scores.index(min(scores))][0]
    return None if max(scores) == min(scores) or best == worst else (best, worst)


@settings(max_examples=200, deadline=None)
@given(rows=rl_rows)
def test_pairs_and_scored_responses_in_one_file(rows: list[tuple[Any, ...]]) -> None:
    def as_json(row: tuple[Any, ...]) -> dict[str, Any]:
        if row[0] == "pair":
            return {"prompt": "q", "chosen": row[1], "rejected": row[2]}
        return {"prompt": "q", "responses": [{"content": c, "score": s} for c, s in row[1]]}

    out, report = run("rl.jsonl", lines(*map(as_json, rows)))
    pairs = [expected_pair(row) for row in rows]
    assert [json.loads(line) for line in out] == [
        {"messages": chat(("user", "q"), ("assistant", chosen)), "rejected_response": rejected}
        for chosen, rejected in filter(None, pairs)
    ]
    assert [e.line for e in report.errors] == [n for n, pair in enumerate(pairs, 1) if pair is None]
    kinds = {row[0] for row, pair in zip(rows, pairs, strict=True) if pair is not None}
    assert report.format == ("preference" if "pair" in kinds else "scored_responses" if kinds else None)
    scored = sum(row[0] == "scored" and pair is not None for row, pair in zip(rows, pairs, strict=True))
    assert (report.stats.preference.from_scored_responses if report.stats.preference else 0) == scored


# --- errors name the line and the field -----------------------------------------------------------


@pytest.mark.parametrize(
    ("messages", "field", "words"),
    [
        (
            chat(("user", "a"), ("user", "b"), ("assistant", "c")),
            "messages[1].role",
            "two user messages in a row",
        ),
        (chat(("user", "a"), ("assistant", "b"), ("assistant", "c")), "messages[2].role", "two assistant"),
        (
            chat(("assistant", "a"), ("user", "b"), ("assistant", "c")),
            "messages[0].role",
            "must be the user's",
        ),
        (chat(("user", "a"), ("assistant", "b"), ("system", "c")), "messages[2].role", "only come first"),
        (
            chat(("user", "a"), ("tool", "b"), ("assistant", "c")),
            "messages[1].role",
            "must follow an assistant",
        ),
        (chat(("user", "a")), "messages[0].role", "must end with the assistant's answer"),
        (
            chat(("user", "a"), ("assistant", "b"), ("user", "c")),
            "messages[2].role",
            "must end with the assistant",
        ),
        (chat(("human", "a"), ("gpt", "b")), "messages[0].role", "unknown role 'human'"),
        (chat(("user", "a"), ("assistant", 5)), "messages[1].content", "must be a string, not a number"),
        (chat(("user", "a"), ("assistant", None)), "messages[1].content", "must be a string, not null"),
        (
            [{"role": "user"}, {"role": "assistant", "content": "b"}],
            "messages[0].content",
            "content is missing",
        ),
        ([{"role": "user", "content": "a", "weight": 1}], "messages[0].weight", "unknown key 'weight'"),
        (["hello"], "messages[0]", "must be an object, not a string"),
        ([], "messages", "must be a non-empty list of messages, not an empty list"),
        ("hi", "messages", "not a string"),
    ],
)
def test_conversation_errors_name_line_and_field(messages: Any, field: str, words: str) -> None:
    error = only_error("sft.jsonl", lines({"messages": QA}, {"messages": messages}))
    assert error.line == 2
    assert error.field == field
    assert error.message.startswith(f"line 2, {field}: ")
    assert words in error.message
    assert error.hint


def test_role_alias_hint() -> None:
    error = only_error("sft.jsonl", lines({"messages": chat(("human", "a"), ("gpt", "b"))}))
    assert "did you mean 'user'?" in error.hint


def test_bad_json_names_the_column() -> None:
    error = only_error("sft.jsonl", lines({"messages": QA}) + b'{"messages": [}\n')
    assert error.line == 2
    assert error.field is None
    assert error.message.startswith("line 2, column 15: invalid JSON")


def test_pretty_printed_json_gets_a_specific_hint() -> None:
    _, report = run("sft.jsonl", b'{\n  "text": "a"\n}\n')
    assert report.errors[0].line == 1
    assert "pretty-printed" in report.errors[0].hint


def test_latin1_is_rejected_with_line_and_byte_column() -> None:
    error = only_error("sft.jsonl", lines({"text": "ok"}) + '{"text": "café"}\n'.encode("latin-1"))
    assert error.line == 2
    assert error.message == "line 2, byte column 14: byte 0xE9 is not valid UTF-8; save the file as UTF-8"
    assert "UTF-8" in error.hint


def test_latin1_plain_text_is_rejected() -> None:
    error = only_error("corpus.txt", "naïve\n".encode("latin-1"))
    assert error.message.startswith("line 1, byte column 3:")


def test_nul_byte_is_rejected() -> None:
    error = only_error("corpus.txt", b"fine\nbro\x00ken\n")
    assert error.line == 2
    assert "byte column 4" in error.message
    assert "NUL" in error.message


def test_utf16_file_is_rejected() -> None:
    _, report = run("sft.jsonl", '{"text": "a"}\n'.encode("utf-16"))
    assert not report.ok
    assert "NUL" in report.errors[0].message


def test_over_long_line_is_skipped_without_being_held_in_memory() -> None:
    validator = DatasetValidator("big.jsonl", max_line_bytes=1000)
    good = b'{"text": "ok"}\n'
    out = validator.feed(good)
    tracemalloc.start()
    try:
        for _ in range(2048):  # an 8 MiB line, fed in 4 KiB chunks
            out += validator.feed(b"x" * 4096)
        out += validator.feed(b"\n" + good)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    out += validator.flush()
    report = validator.finish()
    assert peak < 256 * 1024
    assert out == [good, good]
    assert report.error_count == 1
    assert report.errors[0].line == 2
    assert report.errors[0].message == "line 2 is longer than 1000 bytes"


def test_over_long_last_line_without_newline() -> None:
    out, report = run("big.jsonl", b'{"text": "ok"}\n' + b"y" * 50, max_line_bytes=20, chunk=7)
    assert len(out) == 1
    assert [e.line for e in report.errors] == [2]


def test_line_of_exactly_max_line_bytes_is_fine() -> None:
    row = b'{"text": "ok"}'
    _, report = run("x.jsonl", row + b"\n", max_line_bytes=len(row), chunk=3)
    assert report.ok


def test_mixed_formats_name_what_the_row_looks_like_and_where_the_format_came_from() -> None:
    data = lines({"text": "x"}, {"messages": QA}, {"prompt": "p", "chosen": "a", "rejected": "b"})
    _, report = run("mixed.jsonl", data)
    assert report.format == "pretrain_text"
    assert [e.line for e in report.errors] == [2, 3]
    assert report.errors[0].message == (
        "line 2: looks like sft_messages data (messages with user and assistant turns), "
        "but the file was detected as pretrain_text from line 1"
    )
    assert "looks like preference data" in report.errors[1].message


def test_first_valid_row_decides_the_format() -> None:
    data = lines({"messages": chat(("user", "a"))}, {"text": "x"}, {"messages": QA})
    _, report = run("mixed.jsonl", data)
    assert report.format == "pretrain_text"
    assert [e.line for e in report.errors] == [1, 3]
    assert "from line 2" in report.errors[1].message


def test_chosen_equal_to_rejected() -> None:
    error = only_error("pref.jsonl", lines({"prompt": "p", "chosen": "same", "rejected": "same"}))
    assert (error.line, error.field) == (1, "rejected")
    assert "same text as the chosen answer" in error.message


def test_swift_rejected_response_equal_to_chosen() -> None:
    error = only_error("dpo.jsonl", lines({"messages": QA, "rejected_response": "4"}))
    assert error.field == "rejected_response"


def test_swift_preference_needs_exactly_one_rejected_form() -> None:
    both = {
        "messages": QA,
        "rejected_response": "5",
        "rejected_messages": chat(("user", "q"), ("assistant", "5")),
    }
    assert "has both" in only_error("dpo.jsonl", lines(both)).message
    assert (
        "needs one of" in only_error("dpo.jsonl", lines({"messages": QA, "rejected_response": None})).message
    )


@pytest.mark.parametrize(
    ("responses", "field", "words"),
    [
        ([{"content": "a", "score": 1}, {"content": "b", "score": 1.0}], "responses", "the same score"),
        ([{"content": "a", "score": 1}], "responses", "at least 2"),
        (
            [{"content": "a", "score": 2}, {"content": "a", "score": 1}],
            "responses[1].content",
            "same content",
        ),
        (
            [{"content": "a", "score": "high"}, {"content": "b", "score": 1}],
            "responses[0].score",
            "finite number",
        ),
        (
            [{"content": "a", "score": True}, {"content": "b", "score": 1}],
            "responses[0].score",
            "finite number",
        ),
        (
            [{"content": "a", "score": 10**400}, {"content": "b", "score": 1}],
            "responses[0].score",
            "finite number",
        ),
        ([{"content": "a"}, {"content": "b", "score": 1}], "responses[0].score", "score is missing"),
        (
            [{"contents": "a", "score": 2}, {"content": "b", "score": 1}],
            "responses[0].contents",
            "did you mean 'content'",
        ),
    ],
)
def test_scored_response_errors(responses: list[Any], field: str, words: str) -> None:
    error = only_error("scored.jsonl", lines({"prompt": "p", "responses": responses}))
    assert error.field == field
    assert words in error.message + " " + error.hint


def test_unknown_key_gets_a_did_you_mean() -> None:
    error = only_error("sft.jsonl", lines({"messages": QA, "sytem_prompt": "x"}))
    assert (error.line, error.field) == (1, "sytem_prompt")
    assert error.hint.startswith("did you mean 'system_prompt'?")


def test_unrecognisable_row_gets_a_did_you_mean() -> None:
    error = only_error("sft.jsonl", lines({"mesages": QA}))
    assert "cannot tell the row's format" in error.message
    assert error.hint.startswith("did you mean 'messages'?")


@pytest.mark.parametrize(
    ("row", "field", "words"),
    [
        ({"messages": QA, "rank": 0}, "rank", "must be 1 or more"),
        ({"messages": QA, "rank": True}, "rank", "must be a whole number"),
        ({"messages": QA, "target_modules": []}, "target_modules", "empty list"),
        ({"messages": QA, "target_modules": ["q_proj", 3]}, "target_modules[1]", "non-empty string"),
        ({"messages": QA, "input_template": "no placeholder"}, "input_template", "{input}"),
        ({"messages": QA, "task_tags": "qa"}, "task_tags", "must be a list"),
        ({"messages": QA, "conversation_id": 1.5}, "conversation_id", "must be a string"),
        ({"messages": QA, "label": "yes"}, "label", "true or false"),
        ({"messages": QA, "label": None}, "label", "true or false"),
        ({"text": ""}, "text", "is empty"),
        ({"text": 5}, "text", "must be a string"),
        ({"prompt": "p", "chosen": "a"}, "rejected", "rejected is missing"),
        ({"messages": chat(("assistant", "a"), ("assistant", "b"))}, "messages", "exactly one assistant"),
    ],
)
def test_key_errors(row: dict[str, Any], field: str, words: str) -> None:
    error = only_error("x.jsonl", lines(row))
    assert error.field == field
    assert words in error.message + " " + error.hint


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ('{"text": NaN}', "NaN is not valid JSON"),
        ('{"text": "a", "text": "b"}', "appears twice"),
        ('{"text": "\\ud83d"}', "unpaired surrogate"),
        ("[1, 2]", "expected a JSON object, not a list"),
        ('"just a string"', "expected a JSON object, not a string"),
        ('{"text": "a"} {"text": "b"}', "invalid JSON: Extra data"),
        ("{}", "cannot tell the row's format"),
        ('{"n": ' + "1" * 5000 + "}", "too many digits"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ],
)
def test_json_level_errors(line: str, words: str) -> None:
    error = only_error("x.jsonl", line.encode() + b"\n")
    assert error.line == 1
    assert words in error.message


def test_paired_surrogate_escape_is_fine_and_written_as_utf8() -> None:
    out, _ = accepted("pt.jsonl", '{"text": "smile \\ud83d\\ude00"}')
    assert out == ['{"text": "smile 😀"}\n']


def test_escaped_and_spaced_rows_are_passed_through_unchanged() -> None:
    row = '  {"messages" : [ {"role":"user","content":"say \\"hi\\"\\n"} , {"role":"assistant","content":"hi"} ] }  '
    out, _ = accepted("sft.jsonl", row)
    assert out == [row + "\n"]


def test_empty_file_and_blank_only_file_are_errors() -> None:
    for data in (b"", b"\n\n  \r\n", BOM):
        _, report = run("empty.jsonl", data)
        assert not report.ok
        assert report.errors[0].line is None
        assert "no rows" in report.errors[0].message


def test_bom_and_crlf_are_accepted() -> None:
    out, report = run("sft.jsonl", BOM + QA_LINE.encode().replace(b"\n", b"\r\n") * 2)
    assert report.ok
    assert out == [QA_LINE.encode()] * 2


def test_bom_later_in_the_file_is_an_error() -> None:
    _, report = run("sft.jsonl", QA_LINE.encode() + BOM + QA_LINE.encode())
    assert [e.line for e in report.errors] == [2]


def test_missing_final_newline_is_fine() -> None:
    out, report = run("sft.jsonl", QA_LINE.encode() + QA_LINE.encode().rstrip(b"\n"), chunk=5)
    assert report.ok
    assert out == [QA_LINE.encode()] * 2


def test_finish_without_flush_refuses_to_lose_the_last_line() -> None:
    validator = DatasetValidator("sft.jsonl")
    validator.feed(QA_LINE.encode().rstrip(b"\n"))
    with pytest.raises(RuntimeError, match="flush"):
        validator.finish()
    assert validator.flush() == [QA_LINE.encode()]
    assert validator.finish().ok


def test_progress_counters() -> None:
    validator = DatasetValidator("sft.jsonl")
    data = QA_LINE.encode() * 3
    validator.feed(data[:-10])
    assert (validator.rows_done, validator.bytes_done) == (2, len(data) - 10)
    validator.feed(data[-10:])
    assert (validator.rows_done, validator.bytes_done) == (3, len(data))
    assert validator.finish().bytes == len(data)


def test_max_errors_caps_the_list_but_not_the_count() -> None:
    _, report = run("sft.jsonl", b"nope\n" * 30 + QA_LINE.encode(), max_errors=5)
    assert len(report.errors) == 5
    assert report.error_count == 30
    assert report.rows == 1
    assert not report.ok


def test_unknown_file_kind_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\.jsonl or \.txt"):
        DatasetValidator("data.csv")


# --- streaming: the result never depends on where the chunks end -----------------------------------

CORPUS = (
    BOM
    + QA_LINE.encode().replace(b"\n", b"\r\n")
    + b"\n  \n"
    + b'{"messages": [{"role": "user", "content": "caf\xe9"}]}\n'
    + b"x" * 300
    + b"\n"
    + lines({"messages": QA, "system_prompt": "s"}, {"text": "wrong format"}, {"messages": QA, "rank": 4})
    + b'{"messages": [{"role": "user", "content": "\xe4\xb8\xad"}, {"role": "assistant", "content": "a"}]}'
)


@settings(max_examples=150, deadline=None)
@given(cuts=st.lists(st.integers(0, len(CORPUS)), max_size=12))
@example(cuts=[1, 2, 3])
@example(cuts=list(range(len(CORPUS))))
def test_chunk_boundaries_do_not_change_the_result(cuts: list[int]) -> None:
    expected = run("c.jsonl", CORPUS, max_line_bytes=200)
    bounds = [0, *sorted(cuts), len(CORPUS)]
    validator = DatasetValidator("c.jsonl", max_line_bytes=200)
    out: list[bytes] = []
    for start, end in zip(bounds, bounds[1:], strict=False):
        out += validator.feed(CORPUS[start:end])
    out += validator.flush()
    assert (out, validator.finish()) == expected
    assert expected[1].rows == 4
    assert [e.line for e in expected[1].errors] == [4, 5, 7]


# --- fuzzing: anything in, a report out ------------------------------------------------------------

FORMAT_KEYS = sorted(
    {"messages", "role", "content", "text", "prompt", "chosen", "rejected", "responses", "score", "label"}
    | {"rejected_response", "rejected_messages", "system_prompt", "input_template", "target_modules", "rank"}
)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A named function, not a lambda: hypothesis reads its source to see that it recurses, and a
    multi-line lambda's source is not always found."""
    keys = st.sampled_from(FORMAT_KEYS) | st.text(max_size=4)
    return st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    _containers,
    max_leaves=20,
)


def assert_sane(out: Iterable[bytes], report: DatasetReport) -> None:
    converted = [json.loads(line) for line in out]
    assert len(converted) == report.rows
    assert all(set(row) & {"messages", "text"} for row in converted)
    assert report.error_count >= len(report.errors)
    assert report.ok == (report.error_count == 0 and report.rows > 0)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=600), name=st.sampled_from(["f.jsonl", "f.txt"]), limit=st.integers(1, 80))
def test_arbitrary_bytes_give_a_report(data: bytes, name: str, limit: int) -> None:
    assert_sane(*run(name, data, max_line_bytes=limit, chunk=37))


@settings(max_examples=200, deadline=None)
@given(values=st.lists(json_values, min_size=1, max_size=4))
def test_arbitrary_json_values_give_a_report(values: list[Any]) -> None:
    data = "".join(json.dumps(v) + "\n" for v in values).encode()
    assert_sane(*run("f.jsonl", data))


# --- the published line models agree with the hand-written checks ----------------------------------
# Rows are drawn per format: every key good, except that now and then one is corrupted, dropped or a
# stray key added, so both verdicts and every format turn up often.

ROLES = {"s": "system", "u": "user", "a": "assistant", "t": "tool"}
GOOD_PATTERNS = ["ua", "sua", "uaua", "uata", "uatta", "suatua"]
BAD_PATTERNS = ["a", "aa", "u", "au", "uua", "uaa", "ut", "uat", "usa", "sa", ""]
texts = st.sampled_from(["a", "b", "c"])
bad_values: st.SearchStrategy[Any] = st.sampled_from([None, -1, 2.5, True, ["x"], "", {"k": 1}])
good_extras: st.SearchStrategy[dict[str, Any]] = st.sampled_from(
    [{}, {}, {}, {"loss": True}, {"loss": None}, {"loss_scale": 2}, {"loss_scale": 0.5}]
)
bad_extras: st.SearchStrategy[dict[str, Any]] = st.sampled_from(
    [{"loss": 1}, {"loss_scale": "x"}, {"loss_scale": 10**400}, {"name": "x"}]
)
bad_messages = st.sampled_from(
    ["text", {"role": "human", "content": "a"}, {"content": "a"}, {"role": "user"}]
)


def flip() -> st.SearchStrategy[bool]:
    return st.sampled_from([False] * 7 + [True])


@st.composite
def conversations(draw: st.DrawFn, *, assistant_only: bool = False) -> list[Any]:
    pattern = "a" if assistant_only else draw(st.sampled_from(GOOD_PATTERNS))
    if draw(flip()):
        pattern = draw(st.sampled_from(BAD_PATTERNS))
    messages: list[Any] = []
    for letter in pattern:
        message: dict[str, Any] = {"role": ROLES[letter], "content": draw(texts), **draw(good_extras)}
        if draw(flip()):
            message = draw(
                st.sampled_from([{**message, "content": draw(bad_values)}, {**message, **draw(bad_extras)}])
            )
        messages.append(draw(bad_messages) if draw(flip()) else message)
    return messages


@st.composite
def responses(draw: st.DrawFn) -> list[Any]:
    items: list[Any] = [
        {"content": draw(texts), "score": draw(st.sampled_from([0, 1, 0.5, -3]))}
        for _ in range(draw(st.integers(2, 3)))
    ]
    if draw(flip()):
        items[0] = draw(
            st.sampled_from([{"content": "a"}, {"content": "a", "score": "1"}, {"content": 1, "score": 1}])
        )
    return items[: draw(st.sampled_from([3, 3, 3, 1]))]


GOOD: dict[str, st.SearchStrategy[Any]] = {
    "messages": conversations(),
    "conversation_id": texts | st.integers(0, 9),
    "system_prompt": texts,
    "input_template": st.sampled_from(["Q: {input}", "{input}!"]),
    "task_tags": st.lists(texts, max_size=2),
    "metadata": st.just({"k": "v"}),
    "target_modules": st.sampled_from([["q_proj"], ["q_proj", "v_proj"]]),
    "rank": st.integers(1, 16),
    "text": texts,
    "doc_id": texts | st.integers(0, 9),
    "prompt": texts,
    "chosen": texts,
    "rejected": texts,
    "system": texts,
    "responses": responses(),
    "rejected_response": texts,
    "rejected_messages": conversations(),
    "label": st.booleans(),
}
SHAPES = [  # (format, required keys, optional keys)
    (
        "sft_messages",
        ["messages"],
        ["conversation_id", "system_prompt", "input_template", "task_tags", "metadata"],
    ),
    ("lora_messages", ["messages", "rank"], ["target_modules", "system_prompt", "task_tags"]),
    ("lora_messages", ["messages", "target_modules"], ["rank"]),
    ("pretrain_text", ["text"], ["doc_id", "metadata"]),
    ("pretrain_messages", ["messages"], ["doc_id", "metadata"]),
    ("preference", ["prompt", "chosen", "rejected"], ["system", "metadata"]),
    ("scored_responses", ["prompt", "responses"], ["system", "metadata"]),
    ("swift_preference", ["messages", "rejected_response"], []),
    ("swift_preference", ["messages", "rejected_messages"], []),
    ("kto", ["messages", "label"], []),
]


@st.composite
def rows(draw: st.DrawFn) -> dict[str, Any]:
    fmt, required, optional = draw(st.sampled_from(SHAPES))
    keys = required + [key for key in optional if draw(st.booleans())]
    row = {key: draw(GOOD[key]) for key in keys}
    if fmt == "pretrain_messages":
        row["messages"] = draw(conversations(assistant_only=True))
    if draw(flip()):
        key = draw(st.sampled_from(keys))
        row[key] = draw(bad_values)
    if draw(flip()):
        stray = draw(st.sampled_from([*sorted(GOOD), "sytem_prompt"]))
        row[stray] = draw(GOOD.get(stray, texts))
    if draw(flip()):
        del row[draw(st.sampled_from(keys))]
    return row


def model_accepts(model: type[BaseModel], row: dict[str, Any]) -> bool:
    try:
        model.model_validate(row)
    except ValidationError:
        return False
    return True


@settings(max_examples=200, deadline=None)
@given(row=rows())
@example(row={"messages": QA, "rank": None})
@example(row={"messages": chat(("assistant", "doc"))})
@example(row={"prompt": "p", "responses": [{"content": "a", "score": 1}, {"content": "b", "score": 0}]})
def test_line_models_agree_with_the_validator(row: dict[str, Any]) -> None:
    _, report = run("row.jsonl", lines(row))
    accepting = {name for name, model in line_models().items() if model_accepts(model, row)}
    assert accepting == ({report.format} if report.ok else set()), report.errors


def test_line_models_publish_schemas() -> None:
    models = line_models()
    assert set(models) == {
        "sft_messages",
        "lora_messages",
        "pretrain_text",
        "pretrain_messages",
        "preference",
        "scored_responses",
        "swift_preference",
        "kto",
    }
    for model in models.values():
        schema = model.model_json_schema()
        assert schema["additionalProperties"] is False


# --- can_feed ----------------------------------------------------------------------------------------


def test_can_feed() -> None:
    assert can_feed("sft_messages", "sft", None) is None
    assert can_feed("sft_messages", "lora", None) is None
    assert can_feed("sft_messages", "rl", "grpo") is None
    assert can_feed("preference", "rl", "dpo") is None
    assert can_feed("kto", "rl", "kto") is None
    assert can_feed("plain_text", "pretrain", None) is None
    assert can_feed("preference", "sft", None) == "a preference dataset cannot feed a sft job; it feeds rl"
    assert (
        can_feed("kto", "rl", "dpo")
        == "a kto dataset cannot feed an rl job with rlhf_type dpo; it feeds rlhf_type kto"
    )
    sentence = can_feed("sft_messages", "rl", "dpo")
    assert sentence is not None and "sft_messages" in sentence and "dpo" in sentence
    sentence = can_feed("pretrain_text", "serve", None)
    assert sentence is not None and "pretrain_text" in sentence and "serve" in sentence


def test_can_feed_with_a_report() -> None:
    _, good = run("sft.jsonl", QA_LINE.encode())
    assert can_feed(good, "sft", None) is None
    assert (
        can_feed(good, "pretrain", None)
        == "a sft_messages dataset cannot feed a pretrain job; it feeds sft, lora, rl"
    )
    _, bad = run("sft.jsonl", b"nope\n" + QA_LINE.encode())
    sentence = can_feed(bad, "sft", None)
    assert sentence is not None and "failed validation" in sentence and "sft_messages" in sentence
