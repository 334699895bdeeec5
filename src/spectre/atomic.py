"""Atomic file output: write to a hidden temporary file in the target folder, then rename.

An interrupted run therefore never leaves a partial file under the final name, and an existing
output is only replaced when the caller says so.
"""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputError


def check_writable(path: str | Path, overwrite: bool) -> Path:
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputError(f"{path} already exists (pass --overwrite to replace it)")
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    The temporary name keeps the suffix so libraries that pick a format by extension still work.
    """
    try:
        path = check_writable(path, overwrite)
    except OSError as exc:  # e.g. a file name too long for the file system
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    tmp_path: Path | None = None
    try:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # the name is known before the file exists, so a signal (Ctrl-C, SIGTERM) arriving at any point
            # after creation finds it in the clean-up below: no partial file is ever left behind
            for _ in range(100):
                tmp_path = path.parent / f".{path.stem}.{secrets.token_hex(4)}.partial{path.suffix}"
                try:  # 0o666 less the umask: the usual permissions of an output file
                    os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
                    break
                except FileExistsError:  # somebody else's temporary file: never ours to remove
                    tmp_path = None
            else:
                raise FileExistsError(errno.EEXIST, "no free temporary name")
        except OSError as exc:
            raise OutputError(f"cannot write to {path.parent}: {exc.strerror or exc}") from None
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as exc:
        _remove(tmp_path)
        reason = "disk full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        raise OutputError(f"cannot write {path}: {reason}") from None
    except BaseException:
        _remove(tmp_path)
        raise


def _remove(tmp_path: Path | None) -> None:
    if tmp_path is not None:
        with contextlib.suppress(OSError):
            tmp_path.unlink()


def atomic_write_bytes(path: str | Path, data: bytes, overwrite: bool = True) -> Path:
    with atomic_path(path, overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, overwrite: bool = True) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite)
