"""LEB128 varints of the container: bitsback's one implementation."""
from bitsback.varint import decode, encode

__all__ = ["encode", "decode"]
