"""Datasets, sampling, decoding and batch transforms for dynamic facial expression videos."""

from .emotions import EMOTIONS

__all__ = ["EMOTIONS"]
