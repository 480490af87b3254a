"""bitsback: bits-back coding (BB-ANS, Bit-Swap) over a chain of discretized
Gaussian conditionals, on constriction's ANS stack, with keystream encryption.

Free of torch and of anything diffusion-specific (numpy, scipy, constriction).
Modules: message (the stack), gaussian (latent grids), pixels (DDPM eq. 13
decoder), keystream, chain (the MarkovChain protocol), bitswap, bbans,
initial (initial bits), stats (accounting), errors.
"""
from . import bbans, bitswap, errors, gaussian, keystream, pixels
from .chain import MarkovChain
from .errors import BitsBackError, CorruptMessage, DecodeMismatch, OutOfWindow
from .message import Message
from .stats import Stats

__all__ = ["Message", "MarkovChain", "Stats", "bitswap", "bbans", "gaussian", "pixels",
           "keystream", "errors", "BitsBackError", "DecodeMismatch", "OutOfWindow",
           "CorruptMessage"]
