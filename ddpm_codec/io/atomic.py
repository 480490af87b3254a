"""One atomic writer for every file the toolkit writes (streams, images,
JSON, model weights), so that readers and a killed process see either the
old file, nothing, or the whole new file: never a half-written output."""
from __future__ import annotations

import errno
import os
import tempfile
from typing import Callable

from ddpm_codec.errors import DdpmCodecError

# errno values that mean "this filesystem has no hard links"
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EXDEV}


class OutputExistsError(DdpmCodecError, FileExistsError):
    """The output file exists and overwriting was not asked for."""


def _current_umask() -> int:
    # There is no read-only query for the umask; set and restore it at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _exists_error(path, when="exists"):
    return OutputExistsError(f"{path}: output {when}; pass force=True (--force) to overwrite")


def atomic_write(path, write: Callable[[str], None], force: bool = False) -> None:
    """Call ``write(tmp)`` to fill a temporary file beside `path`, fsync it and
    rename it into place (os.replace when `force`, else a hard link, which
    fails rather than overwrite a file created meanwhile).  On any failure the
    temporary file is removed and `path` is untouched."""
    path = os.fspath(path)
    if os.path.exists(path) and not force:
        raise _exists_error(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_current_umask())       # mkstemp makes it 0600
        os.close(fd)
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        _rename_into_place(tmp, path, force)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _fsync_directory(directory)


def atomic_write_bytes(path, data: bytes, force: bool = False) -> None:
    """Write `data` to `path` atomically (see `atomic_write`)."""
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)
    atomic_write(path, write, force)


def _rename_into_place(tmp: str, path: str, force: bool) -> None:
    if force:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise _exists_error(path, "appeared while writing") from None
    except OSError as e:
        if e.errno not in _NO_HARD_LINKS:
            raise
        # Filesystems without hard links: check-then-rename, a small race.
        if os.path.exists(path):
            raise _exists_error(path) from None
        os.replace(tmp, path)


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable (best effort)."""
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
