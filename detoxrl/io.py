"""Atomic file and folder writes, so an interrupted run never leaves a half-written artifact.

A path that is a symlink is written through (its target is replaced, the link stays), and new files and folders
get the modes the umask gives (``mkstemp``/``mkdtemp`` alone would make them 0600/0700).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager

from detoxrl.errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def through_link(path: str) -> str:
    """The file a symlink points at (so writing replaces the target, not the link); other paths as they are."""
    return os.path.realpath(path) if os.path.islink(path) else path


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same folder and ``os.replace``."""
    path = through_link(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):  # a full disk, a quota: one line, and the old file (if any) is as it was
            raise UserError(f"writing '{path}' failed ({exc.strerror or exc}); nothing was written; free space or "
                            "pick another path") from None
        raise


@contextmanager
def atomic_directory(path: str):
    """Yield a temp folder beside ``path``; on success it is renamed to ``path`` in one step.

    If ``path`` already exists it is replaced only after the new folder is complete. On an
    exception the temp folder is removed and ``path`` is left as it was.
    """
    path = through_link(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        if os.path.exists(path):
            old = tmp + ".old"
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
