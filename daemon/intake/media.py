"""Reading a multimodal dataset's media: bundles (NAME.zip|tar|tar.gz) and `data:` URIs, into the
content-addressed media store under the state folder.

A bundle is untrusted input that expands, so every member is judged by its header before a byte of
it is inflated: its path (relative, inside the archive), its type (a plain file or a folder; links,
devices and nested archives are refused), the member count, and the sizes the archive declares
against `[limits]`. While a member streams, what it inflated to is held against what was read of
the archive (`max_expansion_ratio`), so a zip bomb stops within a chunk even where the headers lie.
Nothing is ever extracted by name: each member is copied through a hash into a scratch file named by
this check, and only the media the rows reference are renamed into `blobs/media/<sha256>.<ext>`,
once the whole dataset is accepted. The same picture in two datasets is therefore one file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from PIL import Image

from daemon.core.config import LimitsConfig
from daemon.core.datasets import MediaItem, MediaKind, MediaProblem
from daemon.core.datasets.media import member_problem, parse_data_uri, sniff
from daemon.core.layout import StateLayout

__all__ = ["Bundle", "BundleProblem", "MediaStore", "describe", "open_bundle"]

_CHUNK = 1024 * 1024
_SLACK = 1024 * 1024
"""Bytes a member may inflate to before the expansion ratio is held against it."""
_NESTED = (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".zst", ".7z", ".rar")
_IMAGE_TYPES = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "BMP": "bmp", "TIFF": "tiff"}


class BundleProblem(ValueError):
    """Why a whole bundle is refused: the member (if one is at fault), what, and what to do."""

    def __init__(self, member: str | None, problem: str, hint: str) -> None:
        super().__init__(f"{member}: {problem}" if member else problem)
        self.member = member
        self.problem = problem
        self.hint = hint


@dataclass
class _Stored:
    sha256: str
    path: Path
    size: int
    checked: dict[str, MediaItem | MediaProblem] = field(default_factory=dict)


class MediaStore:
    """The media of one dataset being checked: copied aside under the scratch folder, checked by
    kind when a row names them, and published by `publish()` only when the dataset is accepted.

    Without a state layout (`llmtraind check`), everything goes to a temporary folder and is removed.
    """

    def __init__(self, layout: StateLayout | None, limits: LimitsConfig, *, offline: bool) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="llmtraind-media-") if layout is None else None
        if layout is None and self._tmp is not None:
            self.final = Path(self._tmp.name) / "media"
            self.scratch = Path(self._tmp.name)
        else:
            assert layout is not None
            self.final, self.scratch = layout.media, layout.scratch
        self.limits = limits
        self.offline = offline
        self._token = secrets.token_hex(8)
        self._count = 0
        self._pending: list[Path] = []
        self._used: dict[Path, Path] = {}
        self._by_sha: dict[str, _Stored] = {}

    def scratch_file(self, suffix: str) -> Path:
        """A new file name under scratch that start-up clears if this check never finishes."""
        self._count += 1
        path = self.scratch / f"media-{self._token}-{self._count}{suffix}"
        self._pending.append(path)
        return path

    def take(self, read: Callable[[int], bytes], what: str, inflated: Callable[[int], None]) -> _Stored:
        """Copy one item through a hash into scratch; `inflated` is told each chunk's size."""
        path = self.scratch_file(".part")
        digest = hashlib.sha256()
        size = 0
        with open(path, "wb") as out:
            while chunk := read(_CHUNK):
                size += len(chunk)
                if size > self.limits.max_media_bytes:
                    raise MediaProblem(
                        f"is larger than [limits] max_media_bytes ({self.limits.max_media_bytes})",
                        f"make {what} smaller, or raise the limit",
                    )
                inflated(len(chunk))
                digest.update(chunk)
                out.write(chunk)
        sha = digest.hexdigest()
        known = self._by_sha.get(sha)
        if known is not None:
            return known
        if len(self._by_sha) >= self.limits.max_members:
            raise MediaProblem(
                f"makes more than [limits] max_members ({self.limits.max_members}) distinct media files",
                "split the dataset, or raise the limit",
            )
        stored = self._by_sha[sha] = _Stored(sha, path, size)
        return stored

    def item(self, stored: _Stored, kind: MediaKind) -> MediaItem:
        """The stored file checked as a `kind` (once per kind), as the converted row will name it."""
        found = stored.checked.get(kind)
        if found is None:
            try:
                found = self._check(stored, kind)
            except MediaProblem as e:
                found = e
            stored.checked[kind] = found
        if isinstance(found, MediaProblem):
            raise found
        self._used[Path(found.path)] = stored.path
        return found

    def _check(self, stored: _Stored, kind: MediaKind) -> MediaItem:
        if kind == "image":
            ext, width, height = _check_image(stored.path, self.limits.max_image_pixels)
            path = self.final / f"{stored.sha256}.{ext}"
            return MediaItem(str(path), stored.sha256, stored.size, width, height)
        with open(stored.path, "rb") as f:
            head = f.read(64)
        container = sniff(kind, head)
        if container is None:
            known = "mp4, webm or avi" if kind == "video" else "wav, mp3, flac, ogg or m4a"
            raise MediaProblem(f"is not a {kind} file its header names", f"use a {known} file")
        return MediaItem(str(self.final / f"{stored.sha256}.{container}"), stored.sha256, stored.size)

    def inline(self, kind: MediaKind, ref: str) -> MediaItem:
        """An item given in the row itself: a `data:` URI, or a URL (left to swift when online)."""
        if ref.startswith(("http://", "https://")):
            if self.offline:
                raise MediaProblem(
                    "is a URL, and the daemon is offline ([swift] offline)",
                    "put the file in a bundle (NAME.zip with the .jsonl) or inline it as a data: URI",
                )
            return MediaItem(ref, ref, 0)
        if not ref.startswith("data:"):
            raise MediaProblem(
                "is a path, and a plain .jsonl carries no files",
                "drop a bundle (NAME.zip, NAME.tar or NAME.tar.gz holding the .jsonl and the media), "
                "or inline the file as a data: URI",
            )
        mime, payload = parse_data_uri(ref)
        if mime and not mime.startswith(f"{kind}/"):
            raise MediaProblem(
                f"is a {mime} URI in a {kind}s list", f"list it where {mime.split('/')[0]}s go"
            )
        view = memoryview(payload)
        position = [0]

        def read(n: int) -> bytes:
            chunk = bytes(view[position[0] : position[0] + n])
            position[0] += len(chunk)
            return chunk

        return self.item(self.take(read, "the inlined file", lambda n: None), kind)

    def publish(self) -> None:
        """Rename every used file into the media store (durably), then drop the rest."""
        if self._used:
            self.final.mkdir(parents=True, exist_ok=True)
        for final, pending in self._used.items():
            if final.exists():
                continue
            linked = final.with_name(f".{final.name}.{self._token}")
            with open(pending, "rb") as f:
                os.fsync(f.fileno())
            os.link(pending, linked)
            os.replace(linked, final)
        if self._used:
            fd = os.open(self.final, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self.discard()

    def discard(self) -> None:
        for path in self._pending:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self._pending.clear()
        if self._tmp is not None:
            self._tmp.cleanup()


def _check_image(path: Path, max_pixels: int) -> tuple[str, int, int]:
    """(extension, width, height) of a picture that decodes; the size is read from the header first,
    so an oversized one is refused before its pixels are."""
    try:
        with Image.open(path) as im:
            width, height = im.size
            if width * height > max_pixels:
                raise MediaProblem(
                    f"is {width}x{height} pixels, over [limits] max_image_pixels ({max_pixels})",
                    "scale it down (swift resizes to the job's max_pixels anyway)",
                )
            im.load()
            ext = _IMAGE_TYPES.get(im.format or "", (im.format or "img").lower())
    except MediaProblem:
        raise
    except Exception as e:  # Pillow raises many kinds on a corrupt file; all mean "does not decode"
        raise MediaProblem(
            f"does not decode as an image ({type(e).__name__}: {e})", "re-save it as PNG or JPEG"
        ) from None
    return ext, width, height


@dataclass
class Bundle:
    """A bundle read into scratch: its rows' file, and every other member by its path."""

    jsonl: Path
    jsonl_name: str
    members: dict[str, _Stored]

    def resolver(self, store: MediaStore) -> Callable[[MediaKind, str], MediaItem]:
        def resolve(kind: MediaKind, ref: str) -> MediaItem:
            if ref.startswith(("data:", "http://", "https://")):
                return store.inline(kind, ref)
            problem = member_problem(ref)
            if problem is not None:
                raise MediaProblem(
                    f"cannot be used: {problem}", "name the file by its path inside the archive"
                )
            stored = self.members.get(ref.removeprefix("./"))
            if stored is None:
                raise MediaProblem(
                    "is not in the bundle",
                    f"add it to the archive at that path (relative to the archive's root, beside "
                    f"{self.jsonl_name}), or fix the path",
                )
            return store.item(stored, kind)

        return resolve


@dataclass
class _Entry:
    name: str
    size: int
    mode: str
    """"file", "dir", "link", "device" or "other"."""
    open: Callable[[], IO[bytes]]


def open_bundle(f: IO[bytes], filename: str, limits: LimitsConfig, store: MediaStore) -> Bundle:
    """Read a bundle's members into `store`'s scratch; raises BundleProblem for a refused bundle and
    MediaProblem (as BundleProblem) for a member over a limit."""
    lower = filename.lower()
    inflated = [0]
    if lower.endswith(".zip"):
        entries = _zip_entries(f, limits)
    else:
        entries = _tar_entries(f, compressed=lower.endswith(".gz"))

    def count(n: int) -> None:
        inflated[0] += n
        read_so_far = f.tell()
        if inflated[0] > _SLACK and inflated[0] > limits.max_expansion_ratio * max(read_so_far, 1):
            raise BundleProblem(
                None,
                f"inflates to more than {limits.max_expansion_ratio:g} times its compressed size "
                "([limits] max_expansion_ratio): a zip bomb, or data that belongs outside an archive",
                "pack the media as they are (pictures and videos are already compressed)",
            )

    return _read_members(entries, limits, store, count)


def _read_members(
    entries: Iterator[_Entry], limits: LimitsConfig, store: MediaStore, count: Callable[[int], None]
) -> Bundle:
    jsonl: Path | None = None
    jsonl_name = ""
    members: dict[str, _Stored] = {}
    seen = 0
    declared = 0
    for entry in entries:
        seen += 1
        if seen > limits.max_members:
            raise BundleProblem(
                None,
                f"holds more than [limits] max_members ({limits.max_members}) members",
                "split it into several bundles, or raise the limit",
            )
        name = _judge(entry)
        if entry.mode == "dir":
            continue
        declared += entry.size
        if declared > limits.max_bundle_bytes:
            raise BundleProblem(
                name,
                f"brings the members' declared size over [limits] max_bundle_bytes ({limits.max_bundle_bytes})",
                "split it into several bundles, or raise the limit",
            )
        if name in members or name == jsonl_name:
            raise BundleProblem(name, "appears twice in the archive", "keep one copy")
        with entry.open() as stream:
            if name.lower().endswith(".jsonl") and "/" not in name:
                if jsonl is not None:
                    raise BundleProblem(
                        name,
                        f"is a second .jsonl at the top, beside {jsonl_name}",
                        "a bundle holds one dataset",
                    )
                jsonl, jsonl_name = _copy_rows(stream, name, limits, store, count), name
                continue
            if entry.size > limits.max_media_bytes:
                raise BundleProblem(
                    name,
                    f"is {entry.size} bytes, over [limits] max_media_bytes ({limits.max_media_bytes})",
                    "make it smaller, or raise the limit",
                )
            try:
                members[name] = store.take(stream.read, name, count)
            except MediaProblem as e:
                raise BundleProblem(name, e.problem, e.hint) from None
    if jsonl is None:
        raise BundleProblem(
            None,
            "holds no .jsonl at its top",
            "put the dataset's rows in one NAME.jsonl at the archive's root",
        )
    return Bundle(jsonl, jsonl_name, members)


def _judge(entry: _Entry) -> str:
    """The member's path, or why the whole bundle is refused for it."""
    name = entry.name.removeprefix("./").rstrip("/") if entry.mode == "dir" else entry.name.removeprefix("./")
    problem = member_problem(name) if name else None
    if problem is not None:
        raise BundleProblem(entry.name, problem, "pack the files with paths relative to the archive's root")
    if entry.mode == "link":
        raise BundleProblem(
            name, "is a link", "pack the file itself (e.g. tar --dereference, zip without -y)"
        )
    if entry.mode in ("device", "other"):
        raise BundleProblem(name, f"is not a plain file ({entry.mode})", "pack plain files and folders only")
    if entry.mode == "file" and name.lower().endswith(_NESTED):
        raise BundleProblem(name, "is an archive inside the archive", "unpack it into the bundle's folders")
    return name


def _copy_rows(
    stream: IO[bytes], name: str, limits: LimitsConfig, store: MediaStore, count: Callable[[int], None]
) -> Path:
    path = store.scratch_file(".rows.jsonl")
    written = 0
    with open(path, "wb") as out:
        while chunk := stream.read(_CHUNK):
            written += len(chunk)
            if written > limits.max_dataset_bytes:
                raise BundleProblem(
                    name,
                    f"is larger than [limits] max_dataset_bytes ({limits.max_dataset_bytes})",
                    "split it",
                )
            count(len(chunk))
            out.write(chunk)
    return path


def _zip_mode(info: zipfile.ZipInfo) -> str:
    if info.is_dir():
        return "dir"
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_IFMT(mode) and not stat.S_ISREG(mode):
        return "device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) else "other"
    return "file"


def _zip_entries(f: IO[bytes], limits: LimitsConfig) -> Iterator[_Entry]:
    """The central directory is read first: sizes and ratios are judged before any member inflates."""
    try:
        archive = zipfile.ZipFile(f)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise BundleProblem(None, f"is not a readable zip archive ({e})", "re-create it with zip") from None
    infos = archive.infolist()
    if len(infos) > limits.max_members:
        raise BundleProblem(
            None,
            f"holds {len(infos)} members, over [limits] max_members ({limits.max_members})",
            "split it into several bundles, or raise the limit",
        )
    total = sum(info.file_size for info in infos)
    if total > limits.max_bundle_bytes:
        raise BundleProblem(
            None,
            f"declares {total} bytes of members, over [limits] max_bundle_bytes ({limits.max_bundle_bytes})",
            "split it into several bundles, or raise the limit",
        )
    for info in infos:
        if info.file_size > _SLACK and info.file_size > limits.max_expansion_ratio * max(
            info.compress_size, 1
        ):
            raise BundleProblem(
                info.filename,
                f"declares {info.file_size} bytes from {info.compress_size} compressed, more than "
                f"[limits] max_expansion_ratio ({limits.max_expansion_ratio:g}): a zip bomb",
                "pack the media as they are (pictures and videos are already compressed)",
            )
        if info.flag_bits & 0x1:
            raise BundleProblem(info.filename, "is encrypted", "pack it without a password")
    return _zip_iter(archive, infos)


def _zip_iter(archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo]) -> Iterator[_Entry]:
    for info in infos:
        yield _Entry(info.filename, info.file_size, _zip_mode(info), _opener(archive, info))


def _opener(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Callable[[], IO[bytes]]:
    def open_member() -> IO[bytes]:
        try:
            return archive.open(info)
        except (zipfile.BadZipFile, NotImplementedError, OSError) as e:
            raise BundleProblem(info.filename, f"cannot be read ({e})", "re-create the archive") from None

    return open_member


def _tar_mode(info: tarfile.TarInfo) -> str:
    if info.isdir():
        return "dir"
    if info.issym() or info.islnk():
        return "link"
    if info.ischr() or info.isblk() or info.isfifo():
        return "device"
    if info.isreg() and not info.issparse():
        return "file"
    return "other"


def _tar_entries(f: IO[bytes], *, compressed: bool) -> Iterator[_Entry]:
    """Streamed in order: a member's header is judged before its content is read or skipped."""
    try:
        archive = tarfile.open(fileobj=f, mode="r|gz" if compressed else "r|")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise BundleProblem(None, f"is not a readable tar archive ({e})", "re-create it with tar") from None
    return _tar_iter(archive)


def _tar_iter(archive: tarfile.TarFile) -> Iterator[_Entry]:
    try:
        for info in archive:
            yield _Entry(info.name, info.size, _tar_mode(info), _tar_opener(archive, info))
    except (tarfile.TarError, OSError, EOFError) as e:
        raise BundleProblem(None, f"is not a readable tar archive ({e})", "re-create it with tar") from None


def _tar_opener(archive: tarfile.TarFile, info: tarfile.TarInfo) -> Callable[[], IO[bytes]]:
    def open_member() -> IO[bytes]:
        stream = archive.extractfile(info)
        if stream is None:
            raise BundleProblem(info.name, "cannot be read", "re-create the archive")
        return stream

    return open_member


def describe(e: BundleProblem) -> tuple[str, str]:
    """(message, hint) for the error file."""
    return (f"member {e.member!r} {e.problem}" if e.member else f"the bundle {e.problem}"), e.hint
