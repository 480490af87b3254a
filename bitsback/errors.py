"""Exceptions of the bits-back coder.

A bits-back decoder that is fed the wrong stream, the wrong keystream seed or
conditionals that differ from the encoder's does not fail by itself: ANS pops
always return *some* symbols. These classes let the decoder (and its callers)
say so explicitly instead of returning garbage.
"""


class BitsBackError(Exception):
    """Base class of every error raised by :mod:`bitsback`."""


class CorruptMessage(BitsBackError, ValueError):
    """Serialized words/bytes that cannot be a message (e.g. length not a multiple of 4)."""


class OutOfWindow(BitsBackError, ValueError):
    """A value lies outside the window of a model that has no escape symbol.

    In the encoder this is a caller error (a posterior window is truncated by
    design); in the decoder it means the stream or the conditionals differ
    from the encoder's, and the decoder re-raises it as :class:`DecodeMismatch`.
    """


class DecodeMismatch(BitsBackError):
    """Decoding is inconsistent with encoding: wrong stream, keystream seed or model.

    Raised when a value popped under the generative model cannot be pushed back
    under the posterior, or when the bits left after decoding are not the
    initial bits the caller expected.
    """


class InsufficientInitialBits(BitsBackError):
    """A posterior pop would read more bits than the stack holds.

    Popping anyway stays exactly decodable but returns atypical latents that
    cost far more than their share; the encoder stops instead. With
    ``initial="auto"`` it retries with more initial bits by itself; with a
    caller-chosen amount it raises this. ``needed_bits``: the shortfall seen
    at the pop of latent ``step``.
    """

    def __init__(self, message: str, needed_bits: float = 0.0, step: int = 0):
        super().__init__(message)
        self.needed_bits, self.step = float(needed_bits), int(step)
