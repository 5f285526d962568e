"""PoundNet: the model, its configuration and its checkpoints.

The names below load on first use (PEP 562), so that ``poundcam.model.weights`` (finding and
fetching weights) works without importing PyTorch: a command fails on missing weights before
it pays for that import.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "PoundNet": "poundcam.model.poundnet",
    "PoundNetConfig": "poundcam.model.config",
    "convert": "poundcam.model.checkpoint",
    "export_safetensors": "poundcam.model.checkpoint",
    "load_poundnet": "poundcam.model.checkpoint",
    "model_id": "poundcam.model.checkpoint",
}

__all__ = ["PoundNet", "PoundNetConfig", "convert", "export_safetensors", "load_poundnet", "model_id"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'poundcam.model' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
