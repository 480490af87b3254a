"""Accounting: ideal information of every push and pop, next to real bits.

Why: bits-back is only worth its complexity if the net codelength tracks the
model's -VLB; keeping the ideal bits (-log2 of the float64 probability used)
per step and per image makes the coder's overhead, the initial bits and the
net cost three separate, checkable figures.
"""
import time
from dataclasses import dataclass, field
from typing import List

import numpy as np


@dataclass
class StepStats:
    step: int
    popped_bits: float = 0.0  # ideal bits read by this step's posterior pop
    pushed_bits: float = 0.0  # ideal bits written by this step's pushes


@dataclass
class Stats:
    order: str                      # "bitswap" or "bbans"
    encrypt: bool
    num_images: int
    dims_per_image: int
    initial_bits: int = 0           # bits on the stack before the first pop
    added_initial_words: int = 0    # words put there by encode (seeded or given)
    final_bits: int = 0
    underflow_bits: float = 0.0     # pops that found fewer bits than they needed
    restarts: int = 0               # retries of initial="auto" after a shortfall
    min_stack_bits: int = -1        # fewest bits left on the stack right after a pop
    steps: List[StepStats] = field(default_factory=list)
    per_image_bits: np.ndarray = None  # ideal net bits per image (pushed - popped)
    time_model_s: float = 0.0       # inside the chain's callables
    time_coding_s: float = 0.0      # everything else in encode

    @property
    def pushed_bits(self) -> float:
        return float(sum(s.pushed_bits for s in self.steps))

    @property
    def popped_bits(self) -> float:
        return float(sum(s.popped_bits for s in self.steps))

    @property
    def ideal_net_bits(self) -> float:
        return self.pushed_bits - self.popped_bits

    @property
    def net_bits(self) -> int:
        return self.final_bits - self.initial_bits

    @property
    def initial_bits_used(self) -> int:
        """Initial bits the pops actually drew on (initial minus the least slack)."""
        return self.initial_bits - max(self.min_stack_bits, 0)

    @property
    def overhead_bits(self) -> float:
        """Real net bits minus the ideal information content."""
        return self.net_bits - self.ideal_net_bits

    def bits_per_dim(self) -> float:
        return self.net_bits / (self.num_images * self.dims_per_image)

    def as_dict(self) -> dict:
        return dict(order=self.order, encrypt=self.encrypt, num_images=self.num_images,
                    dims_per_image=self.dims_per_image, initial_bits=self.initial_bits,
                    added_initial_words=self.added_initial_words, final_bits=self.final_bits,
                    net_bits=self.net_bits, ideal_net_bits=self.ideal_net_bits,
                    pushed_bits=self.pushed_bits, popped_bits=self.popped_bits,
                    overhead_bits=self.overhead_bits, underflow_bits=self.underflow_bits,
                    restarts=self.restarts, min_stack_bits=self.min_stack_bits,
                    initial_bits_used=self.initial_bits_used,
                    time_model_s=self.time_model_s, time_coding_s=self.time_coding_s,
                    steps=[vars(s) for s in self.steps])


class Accountant:
    """Collects ideal bits per step and per image while a coder runs."""

    def __init__(self, stats: Stats, shape):
        self.stats, self.n = stats, shape[0]
        self.per_image = np.zeros(self.n)
        self.t0 = time.perf_counter()

    def _step(self, k: int) -> StepStats:
        for s in self.stats.steps:
            if s.step == k:
                return s
        s = StepStats(k)
        self.stats.steps.append(s)
        return s

    def pushed(self, k: int, bits: np.ndarray) -> None:
        self._step(k).pushed_bits += float(bits.sum())
        self.per_image += bits.reshape(self.n, -1).sum(axis=1)

    def popped(self, k: int, bits: np.ndarray, before: int, after: int) -> None:
        total = float(bits.sum())
        self._step(k).popped_bits += total
        if self.stats.min_stack_bits < 0 or after < self.stats.min_stack_bits:
            self.stats.min_stack_bits = after
        self.per_image -= bits.reshape(self.n, -1).sum(axis=1)
        short = total - (before - after)  # ANS reads ~ideal bits unless the stack ran dry
        if short > 64 + 1e-3 * total:
            self.stats.underflow_bits += short

    def finish(self, msg, model_seconds: float) -> None:
        self.stats.final_bits = msg.num_bits()
        self.stats.per_image_bits = self.per_image
        self.stats.steps.sort(key=lambda s: s.step)
        self.stats.time_model_s = model_seconds
        self.stats.time_coding_s = time.perf_counter() - self.t0 - model_seconds
