"""Faithful class activation maps for PoundNet."""
from . import render, stats
from .compat import PoundNetGradCAM
from .engine import CAMResult, ComparativeCAM
from .targets import TARGETS

__all__ = ["CAMResult", "ComparativeCAM", "PoundNetGradCAM", "TARGETS", "render", "stats"]
