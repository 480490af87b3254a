"""bitsback: bits-back coding (BB-ANS, Bit-Swap) over a chain of discretized
Gaussian conditionals, on constriction's ANS stack, with keystream encryption,
and reverse channel coding of Gaussian steps.

Free of torch and of anything diffusion-specific (numpy, scipy, constriction).
Layers, lowest first:
  errors    the exceptions every layer raises;
  ans       the message: constriction's stack, keystream, initial bits;
  symbols   discretized Gaussians on latent grids, the pixel likelihood (DDPM eq. 13);
  chains    the MarkovChain protocol, BB-ANS and Bit-Swap orders, accounting;
  rcc       reverse channel coding (PFR search, index codes, frames).
"""
from bitsback import errors
from bitsback.ans import keystream
from bitsback.ans.message import Message
from bitsback.chains import bbans, bitswap
from bitsback.chains.chain import MarkovChain
from bitsback.chains.stats import Stats
from bitsback.errors import BitsBackError, CorruptMessage, DecodeMismatch, OutOfWindow
from bitsback.symbols import gaussian, pixels

__all__ = ["Message", "MarkovChain", "Stats", "bitswap", "bbans", "gaussian", "pixels",
           "keystream", "errors", "BitsBackError", "DecodeMismatch", "OutOfWindow",
           "CorruptMessage"]
