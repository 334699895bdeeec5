"""Command-line inputs -> the files to process, shared by ``track``, ``reconstruct``, ``evaluate`` and
``prepare`` so every command reads files, folders, globs and ``.txt`` lists the same way.

* A folder is walked recursively (hidden entries skipped; symlinked folders followed, each real folder
  visited once, so a symlink loop ends). Its files are named by their path relative to the folder:
  ``lrs3/spk1/00001.mp4`` -> ``spk1/00001``; outputs mirror that tree, so names never collide in a dataset.
* A folder of image frames is one input only with ``image_folders=True`` (``--image-folder``): then every
  walked folder that holds images directly is an image sequence named like a file.
* A glob is matched the same way below its literal prefix (``"data/**/*.mp4"`` -> names relative to
  ``data``); ``**`` never follows a symlink loop.
* A ``.txt`` list holds one path per line (``#`` comments); relative entries are relative to the list
  and keep that relative path as their name (``spk1/00001.mp4`` -> ``spk1/00001``).
* A file given directly is named by its stem, as are list entries outside the list's folder.
* The same file reached twice (two arguments, a symlink, a loop) is kept once, by its real path.
  Names that still collide (``a/00001.mp4 b/00001.mp4``) get their folder's name: ``a_00001``.
"""
from __future__ import annotations

import fnmatch
import glob
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .video import IMAGE_SUFFIXES, VIDEO_SUFFIXES

log = logging.getLogger(__name__)

__all__ = ["InputItem", "expand_inputs", "display_path", "IMAGE_FOLDER_HINT"]

IMAGE_FOLDER_HINT = "for a folder of image frames pass --image-folder"


@dataclass(frozen=True)
class InputItem:
    """One input: ``path`` to read (a file, or an image folder) and ``name``, its outputs' base name
    relative to the output folder ('/'-separated, no suffix)."""

    path: Path
    name: str
    label: str = ""  # the folder a name is relative to (used only to tell colliding names apart)


def display_path(path: str | Path) -> str:
    """A path for one line of text: control characters (a newline in a file name) and bytes that are not
    UTF-8 (surrogate escapes: they cannot be printed to a strict stream) escaped."""
    s = os.fsdecode(path) if not isinstance(path, str) else path
    s = s.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(repr(c)[1:-1] if (ord(c) < 32 or ord(c) == 127) else c for c in s)


def _has_magic(s: str) -> bool:
    return any(c in s for c in "*?[")


def _hidden(name: str) -> bool:
    return name.startswith(".")


class _Walker:
    """A loop-safe recursive walk: each real folder once; ``exclude`` folders (the output, when it lies
    below the folder walked) skipped."""

    def __init__(self, exclude: Iterable[Path]):
        self.exclude = {os.path.realpath(p) for p in exclude}
        self.seen: set[tuple[int, int]] = set()

    def walk(self, root: Path, rel: tuple[str, ...] = ()) -> Iterator[tuple[Path, tuple[str, ...], list[os.DirEntry]]]:
        """Yield (folder, its path relative to the walk's root, its visible files), depth first, by name."""
        try:
            st = root.stat()
        except OSError:
            return
        key = (st.st_dev, st.st_ino)
        if key in self.seen or (rel and os.path.realpath(root) in self.exclude):  # the output folder below
            return
        self.seen.add(key)
        try:
            entries = sorted(os.scandir(root), key=lambda e: e.name)
        except OSError as exc:
            if not rel:
                raise InputError(f"{display_path(root)}: cannot read folder ({exc.strerror or exc})") from None
            log.warning("%s: cannot read folder (%s): skipped", display_path(root), exc.strerror or exc)
            return
        files = [e for e in entries if not _hidden(e.name) and _is(e, "file")]
        yield root, rel, files
        for e in entries:
            if not _hidden(e.name) and _is(e, "dir"):
                yield from self.walk(Path(e.path), rel + (e.name,))


def _is(entry: os.DirEntry, kind: str) -> bool:
    try:
        return entry.is_file() if kind == "file" else entry.is_dir()  # both follow symlinks
    except OSError:
        return False


def _suffix(name: str) -> str:
    return os.path.splitext(name)[1].lower()


def _stem_name(parts: Sequence[str]) -> str:
    *dirs, last = parts
    return "/".join([*dirs, os.path.splitext(last)[0] or last])


class _Expander:
    def __init__(self, suffixes: Sequence[str], image_folders: bool, exclude: Iterable[Path]):
        self.suffixes = tuple(s.lower() for s in suffixes)
        self.image_folders = image_folders
        self.exclude = list(exclude)
        self.items: list[InputItem] = []
        self.real: set[str] = set()

    def add(self, path: Path, name: str, label: str) -> None:
        real = os.path.realpath(path)
        if real not in self.real:
            self.real.add(real)
            self.items.append(InputItem(path, name, label))

    def folder(self, root: Path, prefix: tuple[str, ...] = (), label: str | None = None) -> int:
        """Add what a folder tree holds; returns how many inputs it contributed (duplicates included)."""
        label = label if label is not None else (root.resolve().name or "root")
        found = 0
        images_seen = False
        for folder, rel, files in _Walker(self.exclude).walk(root):
            has_images = any(_suffix(e.name) in IMAGE_SUFFIXES for e in files)
            images_seen |= has_images
            if self.image_folders and has_images:
                parts = prefix + rel or (root.resolve().name,)
                self.add(folder, "/".join(parts), label)
                found += 1
            for e in files:
                if _suffix(e.name) in self.suffixes:
                    self.add(Path(e.path), _stem_name(prefix + rel + (e.name,)), label)
                    found += 1
        if not found:
            hint = f"; {IMAGE_FOLDER_HINT}" if images_seen and not self.image_folders else ""
            raise InputError(f"{display_path(root)}: no {', '.join(self.suffixes)} file in this folder or its "
                             f"subfolders{hint}")
        return found

    def pattern(self, pattern: str) -> None:
        parts = Path(pattern).parts
        k = next(i for i, p in enumerate(parts) if _has_magic(p))
        base = Path(*parts[:k]) if k else Path(".")
        rest = parts[k:]
        before = len(self.items)
        matched = 0
        if "**" not in rest:
            hits = [Path(m) for m in sorted(glob.glob(pattern))]
            hits = [(h, Path(h).relative_to(base).parts if k else Path(h).parts) for h in hits]
        else:
            hits = list(self._rglob(base, rest))
        for path, rel in hits:
            if any(_hidden(p) for p in rel):
                continue
            if path.is_dir():
                try:
                    matched += self.folder(path, tuple(rel), label=base.resolve().name)
                except InputError:  # a matched folder without inputs: the pattern may match others
                    pass
            elif path.is_file() and (_suffix(path.name) in self.suffixes or _suffix(path.name) in IMAGE_SUFFIXES):
                self.add(path, _stem_name(rel), base.resolve().name)
                matched += 1
        if not matched and len(self.items) == before:
            raise InputError(f"no file matches {display_path(pattern)}")

    def _rglob(self, base: Path, rest: tuple[str, ...]) -> Iterator[tuple[Path, tuple[str, ...]]]:
        """Match ``rest`` (with ``**``) below ``base`` over a loop-safe walk."""
        for folder, rel, files in _Walker(self.exclude).walk(base):
            if rel and _match(rel, rest):
                yield folder, rel
            for e in files:
                if _match(rel + (e.name,), rest):
                    yield Path(e.path), rel + (e.name,)

    def list_file(self, lst: Path) -> None:
        try:
            text = lst.read_text(encoding="utf-8", errors="surrogateescape")
        except OSError as exc:
            raise InputError(f"{display_path(lst)}: cannot read list ({exc.strerror or exc})") from None
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            entry = Path(line)
            q = entry if entry.is_absolute() else lst.parent / entry
            if not q.exists():
                raise InputError(f"{display_path(lst)}: listed file {display_path(line)} does not exist")
            inside = not entry.is_absolute() and ".." not in entry.parts
            rel = entry.parts if inside else (q.name,)
            if q.is_dir():
                self.folder(q, tuple(rel), label=lst.parent.resolve().name)
            else:
                self.add(q, _stem_name(rel), lst.parent.resolve().name)


def _match(rel: tuple[str, ...], pat: tuple[str, ...]) -> bool:
    """Whether the path parts ``rel`` match the glob parts ``pat`` (``**``: any number of folders)."""
    if not pat:
        return not rel
    if pat[0] == "**":
        return any(_match(rel[i:], pat[1:]) for i in range(len(rel) + 1))
    return bool(rel) and fnmatch.fnmatchcase(rel[0], pat[0]) and _match(rel[1:], pat[1:])


def _disambiguate(items: list[InputItem]) -> list[InputItem]:
    counts: dict[str, int] = {}
    for it in items:
        counts[it.name] = counts.get(it.name, 0) + 1
    out = []
    for it in items:
        if counts[it.name] > 1:
            head, _, last = it.name.rpartition("/")
            it = InputItem(it.path, f"{head}/{it.label}_{last}" if head else f"{it.label}_{last}", it.label)
        out.append(it)
    names = [it.name for it in out]
    if len(set(names)) < len(names):  # still ambiguous: number them
        out = [InputItem(it.path, f"{it.name}_{i}", it.label) for i, it in enumerate(out)]
    return out


def expand_inputs(args: Iterable[str | Path], *, suffixes: Sequence[str] = VIDEO_SUFFIXES,
                  image_folders: bool = False, exclude: Iterable[str | Path] = ()) -> list[InputItem]:
    """Files, folders (walked), globs and ``.txt`` lists -> unique inputs in order, each with its
    output name. Missing paths and empty folders raise a one-line ``InputError`` before any work."""
    ex = _Expander(suffixes, image_folders, [Path(p) for p in exclude])
    for arg in args:
        s = os.fspath(arg)
        p = Path(s)
        if p.is_dir():
            ex.folder(p)
        elif p.is_file() and p.suffix.lower() == ".txt":
            ex.list_file(p)
        elif p.exists():
            ex.add(p, p.stem or p.name, p.resolve().parent.name)
        elif _has_magic(s):
            ex.pattern(s)
        else:
            raise InputError(f"{display_path(s)}: no such file or folder")
    return _disambiguate(ex.items)
