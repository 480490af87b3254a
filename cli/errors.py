"""The exception types that mean "the user gave us something we cannot use"."""
from ddpm_codec.errors import USER_ERRORS

__all__ = ["USER_ERRORS"]
