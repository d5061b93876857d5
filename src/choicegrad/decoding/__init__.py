"""Decoders: a trained generator (and the scorer) -> K distinct candidates per context.

rows.py (distinct rows, the allowed space, single-slot changes), scoring.py (scoring, top-up,
Candidates), local_search.py (polish, anneal_from), decoders.py (each decoder, `decode`), frame.py
(candidates as a table).
"""

from choicegrad.decoding.decoders import DECODERS, DecodeOptions, decode, register_decoder
from choicegrad.decoding.frame import candidates_frame
from choicegrad.decoding.scoring import Candidates, default_budget

__all__ = ["DECODERS", "Candidates", "DecodeOptions", "candidates_frame", "decode", "default_budget", "register_decoder"]
