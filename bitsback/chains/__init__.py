"""Bits-back over a Markov chain: the chain protocol, BB-ANS and Bit-Swap orders, and their bit accounting."""
