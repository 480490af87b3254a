"""One place that lists the errors a user can cause, for the CLI to report
as one line instead of a traceback.  Each module keeps its own classes; this
collects them (imported lazily, so a missing optional piece costs nothing)."""
from __future__ import annotations

import importlib


class CodecError(Exception):
    """Base for stream and codec errors a user can cause."""


_SOURCES = [
    ("ddpm_codec.checkpoint", ["CheckpointError"]),
    ("ddpm_codec.data", ["DataError"]),
    ("ddpm_codec.imageio", ["ImageIOError"]),
    ("ddpm_codec.classical", ["CodecUnavailableError"]),
    ("bitsback.errors", ["BitsBackError"]),
    ("bitsback.rcc", ["RCCError"]),
]


def user_errors() -> tuple:
    found = [CodecError, FileNotFoundError, IsADirectoryError, PermissionError]
    for mod, names in _SOURCES:
        try:
            m = importlib.import_module(mod)
        except ImportError:
            continue
        found += [getattr(m, n) for n in names if hasattr(m, n)]
    return tuple(found)
