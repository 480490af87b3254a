"""Time samplers for the Monte Carlo VLB: each returns (times, weights) with
E[weight * term(time)] equal to the uniform average, so the estimate stays
unbiased whatever the proposal.

- UniformSteps: i ~ U{1..T} (discrete).
- ImportanceSteps: p(i) proportional to sqrt(E[L_i^2]) from a running history
  of each term (improved-diffusion's loss-aware sampler), uniform until every
  step has a full history.
- LowDiscrepancyTimes: VDM I.1, t_j = (u + j / n) mod 1 for a batch.
"""
from __future__ import annotations

import numpy as np
import torch


class TimeSampler:
    def sample(self, n, device=None):  # pragma: no cover - abstract
        raise NotImplementedError

    def update(self, times, terms):
        """Feed back per-sample terms (bits/dim); a no-op for fixed samplers."""

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


class UniformSteps(TimeSampler):
    def __init__(self, T, generator: torch.Generator):
        self.T, self.g = T, generator

    def sample(self, n, device=None):
        i = torch.randint(1, self.T + 1, (n,), generator=self.g)
        return i.to(device), torch.ones(n, device=device)


class ImportanceSteps(UniformSteps):
    def __init__(self, T, generator, history=10, uniform_prob=1e-3):
        super().__init__(T, generator)
        self.hist = np.zeros((T, history))
        self.count = np.zeros(T, dtype=np.int64)
        self.uniform_prob = uniform_prob

    def probs(self):
        if (self.count < self.hist.shape[1]).any():
            return np.full(self.T, 1.0 / self.T)
        w = np.sqrt((self.hist ** 2).mean(1))
        w = w / w.sum()
        return w * (1 - self.uniform_prob) + self.uniform_prob / self.T

    def sample(self, n, device=None):
        p = self.probs()
        u = torch.rand(n, generator=self.g, dtype=torch.float64).numpy()
        i = np.minimum(np.searchsorted(np.cumsum(p), u, side="right"), self.T - 1)
        w = 1.0 / (self.T * p[i])
        return torch.from_numpy(i + 1).to(device), torch.from_numpy(w).float().to(device)

    def update(self, times, terms):
        for i, v in zip(times.cpu().numpy().tolist(), terms.cpu().numpy().tolist()):
            k = int(i) - 1
            if self.count[k] == self.hist.shape[1]:
                self.hist[k, :-1] = self.hist[k, 1:]
                self.hist[k, -1] = v
            else:
                self.hist[k, self.count[k]] = v
                self.count[k] += 1

    def state_dict(self):
        return {"hist": self.hist.tolist(), "count": self.count.tolist()}

    def load_state_dict(self, state):
        if state:
            self.hist = np.asarray(state["hist"], dtype=np.float64)
            self.count = np.asarray(state["count"], dtype=np.int64)


class LowDiscrepancyTimes(TimeSampler):
    def __init__(self, generator: torch.Generator):
        self.g = generator

    def sample(self, n, device=None):
        u = torch.rand((), generator=self.g, dtype=torch.float64)
        t = torch.remainder(u + torch.arange(n, dtype=torch.float64) / n, 1.0)
        return t.to(device), torch.ones(n, device=device)


def make_sampler(schedule, kind: str, generator: torch.Generator) -> TimeSampler:
    if schedule.continuous:
        # continuous time: the low-discrepancy sampler is VDM's variance reduction
        # ("importance" maps to it; the learned schedule plays the proposal's role)
        if kind not in ("uniform", "low_discrepancy", "importance"):
            raise ValueError(f"unknown time sampler {kind!r}")
        return LowDiscrepancyTimes(generator)
    if kind == "importance":
        return ImportanceSteps(schedule.T, generator)
    if kind in ("uniform", "low_discrepancy"):
        return UniformSteps(schedule.T, generator)
    raise ValueError(f"unknown time sampler {kind!r}")
