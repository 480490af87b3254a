"""The bits-back message: a stack of bits on constriction's ``AnsCoder``.

Why a wrapper: bits-back needs (1) arbitrary initial bits, including words
that end in zero, which a plain ``AnsCoder(words)`` rejects or would drop
("sealing"); (2) an exact, serializable representation to XOR a keystream
onto; (3) vectorized push/pop of symbols under per-element models.

Word representation (``words()`` / ``from_words()``) is a bijection between
every uint32 sequence and every coder state: a sequence that ends in a zero
word followed by zero or more ``1`` words (or that consists of ``1`` words
only, the empty one included) is loaded *sealed* (constriction appends a
``1`` word); any other sequence is loaded as-is. ``words()`` strips that
``1`` again. So ``Message.from_words(w).words() == w`` for every ``w`` and
``Message.from_words(m.words())`` is the same coder state as ``m``.
``to_bytes``/``from_bytes`` are the same words in little-endian order.

``num_bits()`` is constriction's ``num_valid_bits``: 32 per bulk word plus
floor(log2(head)), i.e. the information held by the stack, exact to the bit.
Precision: constriction's default coder (32-bit words, 64-bit head, 24-bit
model precision); every modelled symbol has probability >= 2**-24.
"""
import constriction
import numpy as np

from bitsback.ans import keystream
from bitsback.errors import CorruptMessage

_AnsCoder = constriction.stream.stack.AnsCoder
_model = constriction.stream.model
_CATEGORICAL = _model.Categorical(perfect=False)
_UNIFORM = _model.Uniform()
_QG_CACHE: dict = {}
MAX_BITS_PER_SYMBOL = 24  # constriction's default precision


def _qgauss(lo: int, hi: int):
    key = (int(lo), int(hi))
    model = _QG_CACHE.get(key)
    if model is None:
        model = _QG_CACHE[key] = _model.QuantizedGaussian(key[0], key[1])
    return model


def _needs_seal(w: np.ndarray) -> bool:
    j = 0
    while j < w.size and w[w.size - 1 - j] == 1:
        j += 1
    return w.size == j or w[w.size - 1 - j] == 0


class Message:
    """A stack of bits. Push/pop act on the top; the bottom holds the initial bits."""

    __slots__ = ("coder",)

    def __init__(self, coder=None):
        self.coder = coder if coder is not None else _AnsCoder(np.zeros(0, np.uint32), seal=True)

    # -- construction / serialization ------------------------------------
    @classmethod
    def empty(cls) -> "Message":
        return cls()

    @classmethod
    def from_words(cls, words) -> "Message":
        w = np.ascontiguousarray(np.asarray(words, dtype=np.uint32).reshape(-1))
        return cls(_AnsCoder(w, seal=_needs_seal(w)))

    @classmethod
    def from_bytes(cls, data: bytes) -> "Message":
        if len(data) % 4:
            raise CorruptMessage(f"message bytes must be a multiple of 4, got {len(data)}")
        return cls.from_words(np.frombuffer(bytes(data), dtype="<u4").astype(np.uint32))

    def raw(self) -> np.ndarray:
        """constriction's word list (bottom first, top word nonzero)."""
        return self.coder.get_compressed()

    def words(self) -> np.ndarray:
        c = self.raw()
        j = 0
        while j < c.size and c[c.size - 1 - j] == 1:
            j += 1
        if j and (c.size == j or c[c.size - 1 - j] == 0):
            return c[:-1].copy()
        return c

    def to_bytes(self) -> bytes:
        return self.words().astype("<u4").tobytes()

    def num_bits(self) -> int:
        """Exact information content of the stack in bits (``num_valid_bits``)."""
        return int(self.coder.num_valid_bits())

    def num_words(self) -> int:
        return int(self.words().size)

    def copy(self) -> "Message":
        return Message(self.coder.clone())

    def __eq__(self, other) -> bool:
        return isinstance(other, Message) and np.array_equal(self.raw(), other.raw())

    def __repr__(self) -> str:
        return f"Message({self.num_bits()} bits)"

    # -- primitives (vectors of symbols; pop returns them in push order) --
    def push_gaussian(self, symbols, mean, std, lo: int, hi: int) -> None:
        """Push ints in [lo, hi] under constriction's QuantizedGaussian(lo, hi)."""
        if symbols.size:
            self.coder.encode_reverse(np.ascontiguousarray(symbols, np.int32), _qgauss(lo, hi),
                                      np.ascontiguousarray(mean, np.float64),
                                      np.ascontiguousarray(std, np.float64))

    def pop_gaussian(self, mean, std, lo: int, hi: int) -> np.ndarray:
        if mean.size == 0:
            return np.zeros(0, np.int32)
        return self.coder.decode(_qgauss(lo, hi), np.ascontiguousarray(mean, np.float64),
                                 np.ascontiguousarray(std, np.float64))

    def push_categorical(self, symbols, probs) -> None:
        """Push ints in [0, W) under per-row probability tables ``probs`` (n, W)."""
        if symbols.size:
            self.coder.encode_reverse(np.ascontiguousarray(symbols, np.int32), _CATEGORICAL,
                                      np.ascontiguousarray(probs, np.float64))

    def pop_categorical(self, probs) -> np.ndarray:
        if probs.shape[0] == 0:
            return np.zeros(0, np.int32)
        return self.coder.decode(_CATEGORICAL, np.ascontiguousarray(probs, np.float64))

    def push_uniform(self, symbols, size: int) -> None:
        """Push ints in [0, size) uniformly, 2 <= size <= 2**24."""
        if symbols.size:
            sizes = np.full(symbols.size, size, np.int32)
            self.coder.encode_reverse(np.ascontiguousarray(symbols, np.int32), _UNIFORM, sizes)

    def pop_uniform(self, size: int, n: int) -> np.ndarray:
        if n == 0:
            return np.zeros(0, np.int32)
        return self.coder.decode(_UNIFORM, np.full(n, size, np.int32))

    # -- encryption -------------------------------------------------------
    def encrypt(self, seed: int, step: int, max_symbols: int) -> None:
        """XOR the top of the stack with keystream (seed, step); self-inverse.

        Covers every word a pop of ``max_symbols`` symbols can read (at most
        24 bits per symbol plus the 64-bit head), see :mod:`bitsback.ans.keystream`.
        """
        raw = self.raw()
        if raw.size == 0:
            return
        count = (MAX_BITS_PER_SYMBOL * int(max_symbols) + 31) // 32 + 3
        self.coder = _AnsCoder(keystream.xor_top(raw, seed, step, count))
