"""Transcendental functions that give the same bits on every machine.

Why: a stream decodes only if the decoder rebuilds the encoder's probability
tables bit for bit. IEEE 754 makes + - * / and sqrt correctly rounded, so a
fixed sequence of them is identical on every conforming machine; exp, log,
erf, sin and cos are not specified to the last bit, and libm, SLEEF, SVML and
CUDA each round them their own way (issue 18: 84-96% of the network's float32
outputs differed between AVX-512 and AVX2 kernels). So nothing on a coding path
calls them. Instead:

* scalars (a chain step's alpha, sigma, expm1(gamma_t - gamma_s), the time
  embedding's sinusoids) come from Python's ``decimal`` at 40 digits, which is
  software arithmetic, correctly rounded by its specification for + - * /,
  sqrt, exp and ln, and then from ``float(Decimal)``, a correctly rounded
  conversion: the same double everywhere;
* elementwise functions of tensors (the normal CDF of the coders, the
  network's sigmoid, exp and sin) are tables of such doubles on a uniform grid,
  read by linear interpolation with basic operations only (:func:`interp`).

The tables are built lazily, once per process (about 0.3 s), and cached.
"""
from __future__ import annotations

import decimal
import functools
from functools import lru_cache

import numpy as np

_CTX = decimal.Context(prec=40, rounding=decimal.ROUND_HALF_EVEN, Emin=-999999, Emax=999999)
# pi to 60 digits (a constant, so it needs no series)
_PI = decimal.Decimal("3.14159265358979323846264338327950288419716939937510582097494")


def _in_ctx(f):
    """Run f under this module's context, whatever the caller's thread has set."""
    @functools.wraps(f)
    def wrapped(*args):
        with decimal.localcontext(_CTX):
            return f(*args)
    return wrapped


def D(x) -> decimal.Decimal:
    """The exact decimal value of a double (or of an int/str)."""
    return decimal.Decimal(x) if not isinstance(x, float) else decimal.Decimal.from_float(x)


@_in_ctx
def exp(x) -> float:
    return float(_CTX.exp(D(x)))


@_in_ctx
def dec_expm1(x) -> decimal.Decimal:
    """exp(x) - 1 in decimal; near 0 by its series, which keeps relative precision."""
    x = D(x)
    if abs(x) < decimal.Decimal("1e-5"):
        term, total, n = x, x, 1
        while abs(term) > abs(total) * decimal.Decimal("1e-45") and n < 60:
            n += 1
            term = _CTX.divide(_CTX.multiply(term, x), n)
            total = _CTX.add(total, term)
        return total
    return _CTX.subtract(_CTX.exp(x), 1)


def expm1(x) -> float:
    return float(dec_expm1(x))


@_in_ctx
def log(x) -> float:
    return float(_CTX.ln(D(x)))


@_in_ctx
def sqrt(x) -> float:
    return float(_CTX.sqrt(D(x)))


@_in_ctx
def dec_sigmoid(x) -> decimal.Decimal:
    """1 / (1 + exp(-x)) in decimal."""
    return _CTX.divide(1, _CTX.add(1, _CTX.exp(_CTX.minus(D(x)))))


def sigmoid(x) -> float:
    return float(dec_sigmoid(x))


def _sin_reduced(x: decimal.Decimal) -> decimal.Decimal:
    """sin by its Taylor series, for |x| <= pi."""
    x2 = _CTX.multiply(x, x)
    term, total, n = x, x, 1
    while abs(term) > decimal.Decimal("1e-45"):
        term = _CTX.divide(_CTX.multiply(-term, x2), (n + 1) * (n + 2))
        total = _CTX.add(total, term)
        n += 2
    return total


def _reduce(x: decimal.Decimal) -> decimal.Decimal:
    two_pi = 2 * _PI
    k = (x / two_pi).to_integral_value(rounding=decimal.ROUND_HALF_EVEN)
    return x - k * two_pi


@_in_ctx
def sin(x) -> float:
    return float(_sin_reduced(_reduce(D(x))))


@_in_ctx
def cos(x) -> float:
    return float(_sin_reduced(_reduce(D(x) + _PI / 2)))


@_in_ctx
def sin_turns(u) -> float:
    """sin(2 pi u) for a rational ``u`` (turns)."""
    return float(_sin_reduced(_reduce(2 * _PI * D(u))))


# ---- tables --------------------------------------------------------------
class Table:
    """f on the grid x0 + i / per_unit, i = 0..n-1 (doubles), for :func:`interp`."""

    __slots__ = ("x0", "per_unit", "values", "step")

    def __init__(self, x0: float, per_unit: int, values: np.ndarray):
        self.x0, self.per_unit = float(x0), int(per_unit)
        self.values = np.ascontiguousarray(values, np.float64)
        self.step = np.ascontiguousarray(np.append(np.diff(self.values), 0.0))


def interp(table: Table, x: np.ndarray) -> np.ndarray:
    """table's f at x, linear between grid points, clamped to the grid's ends.

    Basic operations only, each rounded once, in a fixed order: the same
    doubles on every machine. ``per_unit`` is a power of two, so the grid
    coordinate u = (x - x0) * per_unit is rounded only by the subtraction."""
    u = (np.asarray(x, np.float64) - table.x0) * table.per_unit
    last = table.values.size - 1
    u = np.clip(u, 0.0, float(last))
    i = np.minimum(np.floor(u), last - 1).astype(np.int64)
    frac = u - i
    return table.values[i] + frac * table.step[i]


@_in_ctx
def _normal_cdf_decimal(x: decimal.Decimal) -> decimal.Decimal:
    """Phi(x) = 1/2 + phi(x) sum_n x^(2n+1) / (2n+1)!!  (all terms of x's sign, so no
    cancellation for x >= 0; x < 0 by symmetry)."""
    if x < 0:
        return 1 - _normal_cdf_decimal(-x)
    ctx = decimal.Context(prec=60, Emin=-999999, Emax=999999)
    x2 = ctx.multiply(x, x)
    term, total, n = x, x, 1
    while term > decimal.Decimal("1e-50") * total or n < 3:
        term = ctx.divide(ctx.multiply(term, x2), n + 2)
        total = ctx.add(total, term)
        n += 2
    phi = ctx.divide(ctx.exp(-x2 / 2), ctx.sqrt(2 * _PI))
    return decimal.Decimal("0.5") + ctx.multiply(phi, total)


NORMAL_RANGE = 10.0     # Phi is taken as 0 below -10 and 1 above (Phi(-10) = 7.6e-24 < 2**-24)
NORMAL_PER_UNIT = 256   # interpolation error < 5e-7 absolute on a bin's mass


@lru_cache(maxsize=None)
def normal_cdf_table() -> Table:
    """Phi on [-10, 10] every 1/256."""
    n = int(2 * NORMAL_RANGE * NORMAL_PER_UNIT) + 1
    half = [_normal_cdf_decimal(decimal.Decimal(i) / NORMAL_PER_UNIT) for i in range(n // 2 + 1)]
    upper = [float(v) for v in half]
    lower = [float(1 - v) for v in reversed(half[1:])]
    return Table(-NORMAL_RANGE, NORMAL_PER_UNIT, np.array(lower + upper))


def normal_cdf(x) -> np.ndarray:
    """Phi(x), portable (``interp`` on :func:`normal_cdf_table`); -inf -> 0, inf -> 1."""
    return interp(normal_cdf_table(), x)


@lru_cache(maxsize=None)
def sigmoid_table() -> Table:
    """sigmoid on [-16, 16] every 1/256 (beyond, the end values: within 1.2e-7 of 0 and 1)."""
    return Table(-16.0, 256, np.array([sigmoid(decimal.Decimal(i) / 256) for i in range(-16 * 256, 16 * 256 + 1)]))


@lru_cache(maxsize=None)
def exp_table() -> Table:
    """exp on [-32, 0] every 1/256 (softmax weights: below -32 they are < 1.3e-14)."""
    return Table(-32.0, 256, np.array([exp(decimal.Decimal(i) / 256) for i in range(-32 * 256, 1)]))


SIN_PER_TURN = 4096


@lru_cache(maxsize=None)
def sin_table() -> Table:
    """sin(2 pi u) on u in [0, 1] every 1/4096 (interpolation error < 3e-7)."""
    return Table(0.0, SIN_PER_TURN, np.array([sin_turns(decimal.Decimal(i) / SIN_PER_TURN)
                                              for i in range(SIN_PER_TURN + 1)]))
