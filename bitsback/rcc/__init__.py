"""Reverse channel coding: a Gaussian step sent by a shared-randomness search (PFR), its index code, chunk layout and frames."""
from bitsback.rcc.coder import RCCError

__all__ = ["RCCError"]
