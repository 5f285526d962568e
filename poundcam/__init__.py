"""poundcam: PoundNet real/fake detection with faithful comparative class activation maps.

The public names below load on first use (PEP 562), so that commands which only talk to the
database or the queue (``poundcam status``) start without importing PyTorch.
"""

from __future__ import annotations

import importlib

from .errors import CAMError, CheckpointError, PoundcamError, WeightsNotFoundError

_LAZY = {
    "CAMResult": "poundcam.cam",
    "ComparativeCAM": "poundcam.cam",
    "PoundNetGradCAM": "poundcam.cam",
    "PoundNet": "poundcam.model",
    "PoundNetConfig": "poundcam.model",
    "preprocess_image": "poundcam.preprocess.transform",
}

# public name -> name in its module, where they differ (``poundcam.preprocess`` is the package)
_ALIASES = {"preprocess_image": "preprocess"}

__all__ = [
    "CAMError",
    "CAMResult",
    "CheckpointError",
    "ComparativeCAM",
    "PoundNet",
    "PoundNetConfig",
    "PoundNetGradCAM",
    "PoundcamError",
    "WeightsNotFoundError",
    "preprocess_image",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), _ALIASES.get(name, name))
        globals()[name] = value
        return value
    raise AttributeError(f"module 'poundcam' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
