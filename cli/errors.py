"""The exception types that mean "the user gave us something we cannot use"."""
from ddpm_codec.errors import user_errors

USER_ERRORS = user_errors()
