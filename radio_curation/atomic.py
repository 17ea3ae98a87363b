"""Writing a file or folder so that it is either absent, the old one, or the whole new one: never half.

Everything is written to a temporary path next to the final one (same folder, hence same file system, so
the rename is atomic) named ``.<name>.tmp-<pid>-<random>``. A process killed mid-write leaves such a
temporary behind, never a final-looking file; a resumed run removes them (they all match ``.*.tmp-*``).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMPORARY_GLOB = ".*.tmp-*"


def temporary_path(final: Path) -> Path:
    """A fresh temporary name next to ``final``, unique across processes, hosts and threads."""
    return final.with_name(f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def remove_path(path: Path) -> None:
    """Remove a file or a folder tree, if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_path(final: str | os.PathLike[str], *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write ``final`` to; renamed onto ``final`` only when the block succeeds.

    On any exception (``KeyboardInterrupt`` included) the temporary is removed and ``final``, whether
    absent or an older version, is left untouched.

    Parameters
    ----------
    final
        The path the result ends up at. Its folder must exist.
    fsync
        Flush the written file to disk before the rename, so that after a power loss ``final`` is the old or
        the new content, not an empty file (for files that a run's state depends on).

    Yields
    ------
    pathlib.Path
        Where to write: a file, or a folder that replaces ``final`` as a whole (a non-empty folder already
        at ``final`` makes the rename fail with ``OSError``).
    """
    final = Path(final)
    tmp = temporary_path(final)
    try:
        yield tmp
        if fsync and tmp.is_file():
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, final)
    except BaseException:
        remove_path(tmp)
        raise


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Write ``data`` (text or bytes) to ``path`` atomically, fsynced before the rename."""
    with atomic_path(path, fsync=True) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
