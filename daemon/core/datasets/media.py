"""Media in dataset rows: ms-swift's multimodal keys, checked, and pointed at the files intake stored.

ms-swift reads a row's pictures, videos and sounds from top-level `images`, `videos` and `audios`
lists, placed in the conversation by `<image>`, `<video>` and `<audio>` tags: the n-th tag takes the
n-th item, so a row whose counts differ trains on the wrong pairs or fails mid-run. The check is
here, in pure code, so `llmtraind check` and intake agree; reading the media themselves (archive
members, `data:` URIs, decoding) is intake's, behind the `MediaResolver` a validator is given.

Rules (the contract; the README's multimodal section explains them)
- `images`, `videos`, `audios`: lists of non-empty strings; per row, the number of tags in the
  messages equals the list's length (a row with tags and no list is a mismatch too).
  `rejected_images` (preference rows) counts the tags of `rejected_messages` when the row has them,
  else those of `messages`. `objects` (grounding: `ref`, `bbox`) is an object passed through as is.
- OpenAI-style content (`"content": [{"type": "text", ...}, {"type": "image_url", "image_url":
  {"url": ...}}]`) becomes the tag in the text and the URL appended to the list, as ms-swift does;
  a row gives its media either that way or as lists, not both.
- Media keys go with conversations: sft_messages, lora_messages, swift_preference and kto rows.
- An item is a path relative to a bundle's root or a `data:` URI; what is refused is worded by the
  resolver (`MediaProblem`), and `member_problem` holds the path rules every archive member obeys.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

from daemon.core.datasets.fields import _kind
from daemon.core.datasets.rules import _RowError

__all__ = [
    "MEDIA_KEYS",
    "MediaItem",
    "MediaKind",
    "MediaProblem",
    "MediaResolver",
    "count_tags",
    "member_problem",
    "parse_data_uri",
    "sniff",
]

MediaKind = Literal["image", "video", "audio"]
TAGS: dict[MediaKind, str] = {"image": "<image>", "video": "<video>", "audio": "<audio>"}
LISTS: dict[str, MediaKind] = {"images": "image", "videos": "video", "audios": "audio"}
MEDIA_KEYS = frozenset({"images", "videos", "audios", "rejected_images", "objects"})
MEDIA_FORMATS = frozenset({"sft_messages", "lora_messages", "swift_preference", "kto"})
_TAG_BYTES = (b"<image>", b"<video>", b"<audio>")
_BLOCK_KINDS: dict[str, MediaKind] = {
    "image_url": "image",
    "image": "image",
    "video_url": "video",
    "video": "video",
    "audio_url": "audio",
    "audio": "audio",
}
_DATA_URI = re.compile(r"data:(?P<mime>[a-z]+/[a-z0-9.+-]+)?(?P<params>(?:;[^;,]*)*?);base64,", re.I)
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


class MediaProblem(ValueError):
    """Why one media item is refused, and what to do about it."""

    def __init__(self, problem: str, hint: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.hint = hint


class MediaItem(NamedTuple):
    """One stored media file, as the converted row names it and the stats count it."""

    path: str
    sha256: str
    bytes: int
    width: int | None = None
    height: int | None = None


MediaResolver = Callable[[MediaKind, str], MediaItem]
"""Looks one item up (a bundle member, a `data:` URI), checks it, stores it; raises MediaProblem."""


def count_tags(messages: list[dict[str, Any]], kind: MediaKind) -> int:
    tag = TAGS[kind]
    return sum(m["content"].count(tag) for m in messages)


def member_problem(name: str) -> str | None:
    """Why a path inside a bundle may not be used, or None. Checked on every member and every row's
    reference, so nothing read or written can land outside the archive's own tree."""
    if not name:
        return "the path is empty"
    if "\x00" in name or "\\" in name:
        return "the path holds a NUL or a backslash"
    if name.startswith("/") or _WINDOWS_DRIVE.match(name):
        return "the path is absolute; paths are relative to the archive's root"
    if ".." in name.split("/"):
        return "the path leaves the archive (..)"
    return None


def parse_data_uri(ref: str) -> tuple[str, bytes]:
    """(media type, payload) of a `data:TYPE;base64,...` URI."""
    match = _DATA_URI.match(ref)
    if match is None:
        raise MediaProblem(
            "is a data: URI that is not base64", "write it as data:image/png;base64,<the bytes in base64>"
        )
    try:
        payload = base64.b64decode(ref[match.end() :], validate=True)
    except (binascii.Error, ValueError):
        raise MediaProblem(
            "its base64 does not decode", "encode the file's bytes in standard base64"
        ) from None
    return (match.group("mime") or "").lower(), payload


def sniff(kind: MediaKind, head: bytes) -> str | None:
    """The container a video's or a sound's first bytes name, or None: these are checked by their
    headers only (decoding them needs codecs the daemon does not carry)."""
    if kind == "video":
        if head[4:8] == b"ftyp":
            return "mp4"
        if head.startswith(b"\x1a\x45\xdf\xa3"):
            return "webm"
        if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
            return "avi"
        return None
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith(b"fLaC"):
        return "flac"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    if head[4:8] == b"ftyp":
        return "m4a"
    return None


class _Media(NamedTuple):
    lists: dict[str, Any]
    objects: Any


def _take_media(obj: dict[str, Any], raw: bytes) -> _Media | None:
    """Lift the media keys out of a row (and turn content blocks into tags), so the conversation
    checks see role/content strings; None when the row has no media at all."""
    if type(obj) is not dict:
        return None
    if (
        obj.keys().isdisjoint(MEDIA_KEYS)
        and b'"type"' not in raw
        and not (b"<" in raw and any(tag in raw for tag in _TAG_BYTES))
    ):
        return None  # the common case, decided on the raw line: most rows carry no media
    lists: dict[str, Any] = {
        key: obj.pop(key) for key in ("images", "videos", "audios", "rejected_images") if key in obj
    }
    objects = obj.pop("objects", None)
    from_blocks = _from_blocks(obj, "messages")
    if from_blocks:
        given = [key for key in from_blocks if lists.get(key) is not None]
        if given:
            raise _RowError(
                given[0],
                f"the row gives media both as content blocks and as a {given[0]} list",
                "use one way: either image_url content blocks, or <image> tags with an images list",
            )
        lists.update(from_blocks)
    if "rejected_messages" in obj:
        rejected = _from_blocks(obj, "rejected_messages")
        if rejected.get("images"):
            lists.setdefault("rejected_images", rejected["images"])
    if not any(_tags_in(obj.get(field)) for field in ("messages", "rejected_messages")) and not any(
        v is not None for v in lists.values()
    ):
        return None if objects is None else _Media({}, objects)
    return _Media(lists, objects)


def _tags_in(messages: object) -> bool:
    if type(messages) is not list:
        return False
    return any(
        type(m) is dict and type(c := m.get("content")) is str and any(t in c for t in TAGS.values())
        for m in messages
    )


def _from_blocks(obj: dict[str, Any], field: str) -> dict[str, list[str]]:
    """Turn OpenAI-style content blocks into tagged text, in place; the media they named, by list."""
    messages = obj.get(field)
    if type(messages) is not list or not any(
        type(m) is dict and type(m.get("content")) is list for m in messages
    ):
        return {}
    found: dict[str, list[str]] = {}
    converted = []
    for i, message in enumerate(messages):
        if type(message) is dict and type(message.get("content")) is list:
            message = {**message, "content": _block_text(message["content"], f"{field}[{i}].content", found)}
        converted.append(message)
    obj[field] = converted
    return found


def _block_text(blocks: list[Any], where: str, found: dict[str, list[str]]) -> str:
    text = []
    for j, block in enumerate(blocks):
        at = f"{where}[{j}]"
        if type(block) is not dict or type(block.get("type")) is not str:
            example = '{"type": "text", "text": "..."} or {"type": "image_url", "image_url": {"url": "..."}}'
            raise _RowError(
                at, f"must be a content block object with a type, not {_kind(block)}", f"e.g. {example}"
            )
        kind = block["type"]
        if kind == "text":
            value = block.get("text")
            if type(value) is not str:
                raise _RowError(f"{at}.text", f"must be a string, not {_kind(value)}", 'e.g. "text": "..."')
            text.append(value)
            continue
        media = _BLOCK_KINDS.get(kind)
        if media is None:
            raise _RowError(
                f"{at}.type",
                f"unknown content block type {kind!r}",
                "use text, image_url, video_url or audio_url blocks",
            )
        value = block.get(kind)
        url = value.get("url") if type(value) is dict else value
        if type(url) is not str or not url:
            raise _RowError(
                f"{at}.{kind}", "must name the item's url", f'e.g. "{kind}": {{"url": "pics/cat.png"}}'
            )
        text.append(TAGS[media])
        found.setdefault(f"{media}s", []).append(url)
    return "".join(text)


def _check_counts(out: dict[str, Any], lists: dict[str, Any]) -> None:
    for key, kind in LISTS.items():
        items = lists.get(key)
        have = 0 if items is None else len(items) if type(items) is list else -1
        if have < 0:
            raise _RowError(
                key, f"must be a list of paths, not {_kind(items)}", f'e.g. "{key}": ["pics/a.png"]'
            )
        tags = count_tags(out["messages"], kind)
        if tags != have:
            tag = TAGS[kind]
            raise _RowError(
                key,
                f"the messages hold {tags} {tag} tag(s) but {key} lists {have} item(s)",
                f"put one {tag} tag in the text where each item goes, and list each item once in {key}",
            )
    rejected = lists.get("rejected_images")
    if rejected is not None:
        if type(rejected) is not list:
            got = _kind(rejected)
            raise _RowError("rejected_images", f"must be a list of paths, not {got}", 'e.g. ["pics/b.png"]')
        against = out.get("rejected_messages") or out["messages"]
        tags = count_tags(against, "image")
        if tags != len(rejected):
            raise _RowError(
                "rejected_images",
                f"the {'rejected_messages' if 'rejected_messages' in out else 'messages'} hold {tags} "
                f"<image> tag(s) but rejected_images lists {len(rejected)} item(s)",
                "give the rejected answer one image per <image> tag",
            )


def _attach(
    fmt: str, out: dict[str, Any], media: _Media, resolve: MediaResolver | None
) -> tuple[dict[str, Any], list[tuple[MediaKind, MediaItem]]]:
    """The converted row with its media pointed at stored files, and those files for the stats."""
    if fmt not in MEDIA_FORMATS:
        if not media.lists and media.objects is None:
            return out, []  # a literal tag in a pretraining text or a pair is text, not a placeholder
        raise _RowError(
            next(iter(media.lists), "objects"),
            f"media keys are not read with {fmt} rows",
            "write the row as messages (with rejected_response or rejected_messages for a preference)",
        )
    _check_counts(out, media.lists)
    if media.objects is not None and type(media.objects) is not dict:
        raise _RowError(
            "objects",
            f"must be an object, not {_kind(media.objects)}",
            'e.g. "objects": {"ref": [...], "bbox": [...]}',
        )
    row = dict(out)
    used: list[tuple[MediaKind, MediaItem]] = []
    for key, items in media.lists.items():
        if items is None:
            continue
        kind: MediaKind = LISTS.get(key, "image")
        paths = []
        for i, ref in enumerate(items):
            field = f"{key}[{i}]"
            if type(ref) is not str or not ref:
                raise _RowError(
                    field, f"must be a non-empty string, not {_kind(ref)}", "name a file in the bundle"
                )
            if resolve is None:
                raise _RowError(field, "media cannot be checked here", "drop the dataset into the inbox")
            try:
                item = resolve(kind, ref)
            except MediaProblem as e:
                raise _RowError(field, f"{_shown(ref)} {e.problem}", e.hint) from None
            paths.append(item.path)
            used.append((kind, item))
        if items:
            row[key] = paths
    if media.objects is not None:
        row["objects"] = media.objects
    return row, used


def _shown(ref: str) -> str:
    return f"{ref[:40]}..." if ref.startswith("data:") else repr(ref)
