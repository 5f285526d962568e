"""Class activation maps for PoundNet: ComparativeCAM (engine.py) over one file per method on a
shared base (base.py), what a model must expose (protocol.py), targets, statistics, rendering,
and the seed document's interface (compat.py)."""

from . import render, stats
from .base import CAMResult
from .compat import PoundNetGradCAM
from .engine import DEFAULT_METHOD, METHODS, ComparativeCAM
from .protocol import AttentionExplainableModel, ExplainableModel
from .targets import TARGETS

__all__ = [
    "AttentionExplainableModel",
    "CAMResult",
    "ComparativeCAM",
    "DEFAULT_METHOD",
    "ExplainableModel",
    "METHODS",
    "PoundNetGradCAM",
    "TARGETS",
    "render",
    "stats",
]
