"""Packed export: files where k-bit weights take k bits (see :mod:`sturdynet.export.packed`)."""
from .bits import pack_bits, packed_nbytes, unpack_bits
from .packed import export_model, load_packed, read_packed, stored_tensors

__all__ = ["export_model", "load_packed", "pack_bits", "packed_nbytes", "read_packed", "stored_tensors",
           "unpack_bits"]
