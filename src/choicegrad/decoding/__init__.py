"""Decoders: a trained generator (and the scorer) -> K distinct candidates per context.

rows.py (distinct rows, the allowed space, single-slot changes), scoring.py (scoring, top-up,
Candidates), local_search.py (polish, anneal_from), decoders.py (each decoder, `decode`), frame.py
(candidates as a table).
"""

from choicegrad.decoding import decoders as _decoders
from choicegrad.decoding.decoders import DecodeOptions, decode, register_decoder
from choicegrad.decoding.frame import candidates_frame
from choicegrad.decoding.scoring import Candidates, default_budget


def __getattr__(name: str):
    # DECODERS read from decoders.py at each access, so that it holds the decoders registered since
    if name == "DECODERS":
        return _decoders.DECODERS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["DECODERS", "Candidates", "DecodeOptions", "candidates_frame", "decode", "default_budget", "register_decoder"]
