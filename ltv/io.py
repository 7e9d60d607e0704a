"""Atomic writes: the one way the project writes a file (or builds a folder) that a reader may see.

A reader sees either the old content of a path or the new one, never a half-written file: the writer
writes under a temp name beside the target (same folder, so the same file system) and renames it at the
end. Hidden temp names (leading ``.``) keep Dask, pyarrow datasets and globs from picking them up.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_write"]


def _beside(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Give the block a temp path beside ``path``; rename it to ``path`` when the block succeeds.

    Parameters
    ----------
    path : str or os.PathLike
        The target. Its parent folders are created. What is there now (a file, or a folder when the
        block builds a folder) is replaced only when the block succeeds.

    Yields
    ------
    pathlib.Path
        ``<parent>/.<name>.tmp-<pid>-<token>``, which does not exist yet: write a file there (``open``,
        ``pq.write_table``, ``Path.write_text``...) or build a folder there.

    Raises
    ------
    FileNotFoundError
        When the block wrote nothing at the temp path.

    Notes
    -----
    On any exception in the block (``KeyboardInterrupt`` included) the temp path is removed, ``path`` is
    left as it was, and the exception propagates. A folder replaces an existing folder by moving the old
    one aside first (two renames, then the old copy is removed), so a crash between them leaves the old
    copy under a ``.<name>.old-*`` name, never a half-built folder under ``path``.

    Examples
    --------
    >>> with atomic_write("out/submission.csv") as tmp:  # doctest: +SKIP
    ...     with open(tmp, "w") as fh:
    ...         fh.write("row_id,iap_revenue_d7\\n")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _beside(path, "tmp")
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"atomic_write({path}): the block wrote nothing at {tmp}")
        _replace(tmp, path)
    finally:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def _replace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``; a folder at ``dst`` is moved aside first and removed after."""
    if not (src.is_dir() and dst.is_dir()):
        os.replace(src, dst)
        return
    old = _beside(dst, "old")
    os.replace(dst, old)
    try:
        os.replace(src, dst)
    except BaseException:
        os.replace(old, dst)
        raise
    shutil.rmtree(old, ignore_errors=True)
