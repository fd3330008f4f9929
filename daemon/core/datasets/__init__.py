"""Dataset files dropped into the inbox: detect the line format, check every row, convert to ms-swift's JSONL.

The inbox adapter reads a dropped file once, in chunks, while it hashes it; this package only ever sees
those bytes. So intake and `llmtraind check` share one code path, a 10 GB file costs one pass, and
memory stays bounded by `max_line_bytes` plus one chunk. Problems are collected per line with a hint,
because the person who dropped the file reads them in `inbox/rejected/NAME.error.txt` and should be able
to fix every line in one go instead of one per retry.

Rules (the contract; they are what the error file and the README explain)

Container
- `NAME.txt`: every non-blank line is one pretraining document, converted to `{"text": LINE}`
  (format `plain_text`). `NAME.jsonl`: every non-blank line is one JSON object.
- Strict UTF-8. An invalid byte is reported with its line and byte column; Latin-1 / Windows-1252 files
  fail here (save the file as UTF-8). A UTF-8 byte-order mark at the very start is dropped.
- `\\n` and `\\r\\n` line ends are both accepted; a missing final newline is fine. Blank (whitespace-only)
  lines are skipped but still counted, so line numbers match an editor's.
- NUL bytes are rejected: they mean a binary or UTF-16 file.
- A line may hold at most `max_line_bytes` bytes, its newline not counted. A longer line is reported
  and skipped without ever being held whole.
- JSON: NaN and Infinity are rejected (not JSON; swift's reader fails on them), so is a key repeated in
  one object (readers disagree on which copy wins), and so is a string holding an unpaired surrogate
  escape such as `"\\ud83d"` (it cannot be written as UTF-8).
- A file with no rows is an error. Each bad line reports its first problem; the report keeps the first
  `max_errors` problems and counts all of them.

Rows
- Optional keys may be null, which means absent. Unknown keys are errors, with a did-you-mean.
- The format is detected per row. A file holds one format, decided by its first valid row; a later row
  of another format is an error. Two exceptions: `sft_messages` and `lora_messages` rows mix freely,
  and the file is `lora_messages` as soon as any row carries `target_modules` or `rank`; `preference`
  and `scored_responses` rows mix freely (the management API's own RL example holds one of each), and
  the file is `preference` as soon as any row is given as a pair.
- A conversation (`messages`) is a list of `{"role", "content"}` objects (`loss` and `loss_scale` may be
  added, as ms-swift allows). `content` is a string; `role` is system, user, assistant or tool. Order: at
  most one system message, first; then a user turn; never two user or two assistant turns in a row; tool
  messages only after an assistant turn (or another tool message), and the assistant answers a tool
  result before the next user turn; the last message is the assistant's.

Formats (`DatasetFormat`), with the keys each row may carry
- `sft_messages`: messages; conversation_id, system_prompt, input_template, task_tags, metadata.
- `lora_messages`: as sft_messages, plus target_modules (non-empty list of names) and/or rank (>= 1).
- `pretrain_text`: text (non-empty); doc_id, metadata. `plain_text`: the lines of a `.txt` file.
- `pretrain_messages`: messages holding exactly one assistant message (ms-swift's pretraining form);
  doc_id, metadata.
- `preference`: prompt, chosen, rejected (chosen != rejected, or swift fails); system, metadata.
- `scored_responses`: prompt, responses (>= 2 of `{"content", "score"}`, scores finite numbers, not all
  equal); system, metadata. The highest score is chosen and the lowest rejected (ties: the first listed
  wins); their contents must differ. The stats count these rows (`preference.from_scored_responses`).
- `swift_preference`: messages ending with the chosen answer, plus rejected_response (differs from the
  chosen answer) or rejected_messages (a conversation whose last answer differs from it), not both.
- `kto`: messages plus label (true or false).

Conversion (one output line per row, what ms-swift 4.6 reads)
- messages formats keep `messages` and drop the bookkeeping keys. system_prompt becomes a leading
  system message unless the conversation has one; input_template must contain `{input}`, which is
  replaced by each user message's content.
- preference and scored_responses become `{"messages": [system?, user prompt, assistant chosen],
  "rejected_response": rejected}`; pretrain_text and plain_text become `{"text": ...}`; swift_preference
  and kto keep their swift keys.
- A row that already is its own output (`{"messages": [role/content pairs]}` or `{"text": ...}`) is
  passed through byte for byte when ms-swift provably reads it the same (see `codec._same_as_read`):
  serialising is the most expensive step of the whole pass. Every other row is written with
  `json.dumps(..., ensure_ascii=False)`.

Modules, each named after what it owns
- `formats`: the format names, the jobs each can feed, the keys each one's rows may carry.
- `rules`: the row rules the checks and the line models share, and the error they raise.
- `lines`: the published pydantic line models (schemas/dataset-*.json).
- `fields`: reading one typed field of a row, with a worded error.
- `rows`: the hand-written row checks, format detection, and each format's output row.
- `codec`: strict bytes to JSON, and a checked row back to the line ms-swift reads.
- `stats`: the statistics of a file, summed as rows go by.
- `report`: the report on a file, and whether it can feed a job.
- `validator`: `DatasetValidator`, which streams a file's bytes through all of the above.
- `media`: the multimodal keys (`images`, `videos`, `audios`, `rejected_images`, `objects`), lifted out
  of a conversation row before its check and attached after it, each item resolved to a stored file.
A new row format adds its name and keys to `formats`, its line model to `lines` and its check to `rows`.
"""

from __future__ import annotations

from daemon.core.datasets.formats import DatasetFormat, RlhfType, TaskType
from daemon.core.datasets.lines import (
    KtoLine,
    LoraMessagesLine,
    Message,
    PreferenceLine,
    PretrainMessagesLine,
    PretrainTextLine,
    ScoredResponse,
    ScoredResponsesLine,
    SftMessagesLine,
    SwiftPreferenceLine,
    line_models,
)
from daemon.core.datasets.media import MediaItem, MediaKind, MediaProblem, MediaResolver
from daemon.core.datasets.report import DatasetReport, LineError, LoraHints, can_feed
from daemon.core.datasets.stats import DatasetStats, ImageSize, MediaStats, PreferenceStats, TurnStats
from daemon.core.datasets.validator import DatasetValidator

__all__ = [
    "DatasetFormat",
    "DatasetReport",
    "DatasetStats",
    "DatasetValidator",
    "ImageSize",
    "KtoLine",
    "LineError",
    "LoraHints",
    "LoraMessagesLine",
    "MediaItem",
    "MediaKind",
    "MediaProblem",
    "MediaResolver",
    "MediaStats",
    "Message",
    "PreferenceLine",
    "PreferenceStats",
    "PretrainMessagesLine",
    "PretrainTextLine",
    "RlhfType",
    "ScoredResponse",
    "ScoredResponsesLine",
    "SftMessagesLine",
    "SwiftPreferenceLine",
    "TaskType",
    "TurnStats",
    "can_feed",
    "line_models",
]
