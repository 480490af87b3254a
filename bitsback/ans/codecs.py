"""A codec algebra over the ANS message, after craystack's idea.

A codec is any object with ``push(message, x) -> message`` and
``pop(message) -> (message, x)`` such that ``pop(push(m, x)) == (m, x)``: the
law, checked for every codec in tests/test_codec_law.py.  Messages are values
here: a push returns a new message and never changes the one it was given.

Why an algebra: a stream is a *plan* (which pieces, in which order, with
which parameters) turned into one composite codec.  The encoder is that
codec's push and the decoder its pop, so the decoder follows from the plan
instead of mirroring the encoder step by step.

Composites:
  serial(codecs)       x is a sequence, one item per codec; pushed first to
                       last (the first ends up at the bottom of the stack),
                       popped last to first;
  known_words(words)   a fixed run of words on top of the stack (PRNG top-ups):
                       push appends them, pop checks they came back and strips them;
  base_words(enc, dec) the bottom of the stack as whole words (a seed): push
                       needs an empty message, pop takes everything left;
  chained(make, n)     n codecs where the i-th depends on the values popped
                       before it (craystack's from_generator, for conditional
                       pieces such as pixel groups): pop 0..n-1, push n-1..0;
  tap(codec, seen)     the same codec, calling seen(x) after each push and pop
                       (progress bars).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from bitsback.ans.message import Message
from bitsback.errors import DecodeMismatch


@dataclass(frozen=True)
class Codec:
    """A (push, pop) pair with a name for messages."""
    push: Callable[[Message, Any], Message]
    pop: Callable[[Message], tuple[Message, Any]]
    name: str = "codec"
    parts: tuple = ()            # the codecs a composite is made of


def serial(codecs: Sequence) -> Codec:
    """The codecs one after another; x[i] goes through codecs[i]."""
    codecs = tuple(codecs)

    def push(msg, xs):
        if len(xs) != len(codecs):
            raise ValueError(f"serial: {len(xs)} values for {len(codecs)} codecs")
        for c, x in zip(codecs, xs):
            msg = c.push(msg, x)
        return msg

    def pop(msg):
        out = []
        for c in reversed(codecs):
            msg, x = c.pop(msg)
            out.append(x)
        return msg, out[::-1]

    return Codec(push, pop, f"serial({len(codecs)})", codecs)


def known_words(words: np.ndarray, what: str = "known words") -> Codec:
    """Words the decoder knows in advance (x is None): they cost bits in the
    stream but carry no data, and their return is a check."""
    words = np.asarray(words, dtype=np.uint32).reshape(-1)

    def push(msg, x):
        if x is not None:
            raise ValueError("known_words carries no value (x must be None)")
        return Message.from_words(np.concatenate([msg.words(), words]))

    def pop(msg):
        w = msg.words()
        if w.size < words.size or not np.array_equal(w[w.size - words.size:], words):
            raise DecodeMismatch(f"{what} did not come back (damaged stream or different conditionals)")
        return Message.from_words(w[:w.size - words.size]), None

    return Codec(push, pop, what)


def base_words(to_words: Callable[[Any], np.ndarray], from_words: Callable[[np.ndarray], Any],
               what: str = "base") -> Codec:
    """The bottom of the stack: push starts the message from ``to_words(x)``;
    pop hands every word left to ``from_words``, leaving the empty message."""

    def push(msg, x):
        if msg.num_words():
            raise ValueError(f"{what}: the base goes under an empty message")
        return Message.from_words(np.asarray(to_words(x), dtype=np.uint32))

    def pop(msg):
        return Message.empty(), from_words(msg.words())

    return Codec(push, pop, what)


def chained(make: Callable[[int, list], Any], n: int) -> Codec:
    """x is a list of n values; ``make(i, x[:i])`` is the codec of x[i], so each
    piece may depend on those decoded before it.  The decoder pops x[0] first,
    so the encoder pushes x[n-1] first and x[0] last (on top)."""

    def push(msg, xs):
        if len(xs) != n:
            raise ValueError(f"chained: {len(xs)} values for {n} codecs")
        for i in reversed(range(n)):
            msg = make(i, list(xs[:i])).push(msg, xs[i])
        return msg

    def pop(msg):
        xs = []
        for i in range(n):
            msg, x = make(i, xs).pop(msg)
            xs.append(x)
        return msg, xs

    return Codec(push, pop, f"chained({n})")


def tap(codec, seen: Callable[[Any], None]) -> Codec:
    """`codec`, calling ``seen(x)`` after each push and each pop (the law is unchanged)."""

    def push(msg, x):
        out = codec.push(msg, x)
        seen(x)
        return out

    def pop(msg):
        msg, x = codec.pop(msg)
        seen(x)
        return msg, x

    return Codec(push, pop, f"tap({getattr(codec, 'name', 'codec')})", (codec,))
