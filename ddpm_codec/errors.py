"""The errors a user can cause, under one base class, so that the CLI reports
each as one line (exit code 2) and every other exception stays a bug with its
traceback.  Each layer defines its own subclasses of DdpmCodecError; the coder
below (bitsback) keeps its own base, BitsBackError, and both are user errors."""
from __future__ import annotations

from bitsback.errors import BitsBackError


class DdpmCodecError(Exception):
    """Base of every error a user can cause: bad streams, images, data, models."""


class CodecError(DdpmCodecError):
    """Stream and codec errors (the container's StreamError derives from it)."""


USER_ERRORS = (DdpmCodecError, BitsBackError, FileNotFoundError, IsADirectoryError, PermissionError)


def user_errors() -> tuple:
    """The exception types that mean "the user gave us something we cannot use"."""
    return USER_ERRORS
