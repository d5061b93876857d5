"""Decoders: a trained generator (and the scorer) -> K distinct candidates per context."""

from choicegrad.decoding.decoders import DECODERS, Candidates, candidates_frame, decode, default_budget

__all__ = ["DECODERS", "Candidates", "candidates_frame", "decode", "default_budget"]
