"""Initial bits: what the first posterior pops read before anything was pushed.

Why separate: bits-back borrows these bits and the decoder gives them back;
they are not part of the net cost, but a stream has to carry them, so they
are counted and reported apart. Sources (``initial=`` of the encoders):

* ``"auto"`` / ``None``: seeded words, as many as the first pop needs
  (float64 entropy estimate of its discretized Gaussians plus 6 sigma of its
  fluctuation, see :func:`bitsback.coding.needed_bits`, plus 2% and 128
  bits), minus what the given base message already holds. Later pops may
  find the stack short (Bit-Swap drains when a step's posterior is wider than
  its prior); the encoder then retries with more
  (:func:`bitsback.coding.encode_with_restarts`);
* ``int n``: n seeded words;
* uint32 array / bytes: the caller's own words (e.g. real data to seed a
  single-image stream).

Seeded words are word ``i`` = keystream word ``i`` of stream
``(initial_seed, keystream.INITIAL_STEP)`` -- a documented sequence that a
decoder can regenerate to check what it got back, whatever the count.
The extra words go on top of the base message: the message left after
decoding is ``Message.from_words(base.words() ++ extra)``.
"""
import math

import numpy as np

from bitsback.ans import keystream
from bitsback.ans.message import Message
from bitsback.errors import DecodeMismatch


def seeded_words(seed: int, n: int) -> np.ndarray:
    return keystream.words(seed, keystream.INITIAL_STEP, 0, int(n))


def build(message, initial, need_bits: float, seed: int):
    """Return (message to start from, number of words added); ``need_bits``
    is what "auto" provides for (see :func:`bitsback.coding.needed_bits`)."""
    base = message.words() if message is not None else np.zeros(0, np.uint32)
    if initial is None or (isinstance(initial, str) and initial == "auto"):
        have = message.num_bits() if message is not None else 0
        n = max(0, math.ceil((1.02 * need_bits + 128 - have) / 32))
        extra = seeded_words(seed, n)
    elif isinstance(initial, (int, np.integer)):
        extra = seeded_words(seed, int(initial))
    elif isinstance(initial, (bytes, bytearray)):
        extra = Message.from_bytes(initial).words()
    else:
        extra = np.asarray(initial, dtype=np.uint32).reshape(-1)
    return Message.from_words(np.concatenate([base, extra])), int(extra.size)


def check(left: Message, expect, seed: int) -> None:
    """Raise DecodeMismatch unless ``left`` holds the expected initial bits.

    ``expect``: None (no check), ``"seeded"`` (seeded words of any count, no
    base message), or the expected Message / uint32 words / bytes.
    """
    if expect is None:
        return
    got = left.words()
    if isinstance(expect, str):
        if expect != "seeded":
            raise ValueError(f"unknown expect_initial {expect!r}")
        want = seeded_words(seed, got.size)
    elif isinstance(expect, Message):
        want = expect.words()
    elif isinstance(expect, (bytes, bytearray)):
        want = Message.from_bytes(expect).words()
    else:
        want = np.asarray(expect, dtype=np.uint32).reshape(-1)
    if not np.array_equal(got, want):
        raise DecodeMismatch("the bits left after decoding are not the initial bits: wrong "
                             "stream, keystream seed or conditionals")
