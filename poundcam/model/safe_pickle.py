"""Reading PyTorch checkpoints without executing code from them.

``torch.load(weights_only=True)`` refuses any object that is not a tensor or a plain
container. Released Lightning checkpoints also carry hyper-parameter containers and callback
states. Those objects are loaded as inert data (tagged OrderedDicts; nothing of theirs is
imported or run), but only for globals from the training frameworks listed below; anything else
is refused before unpickling starts.
"""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError

# Namespaces whose objects may be replaced by placeholders: training-framework bookkeeping.
PLACEHOLDER_NAMESPACES = (
    "lightning.",
    "pytorch_lightning.",
    "lightning_fabric.",
    "omegaconf.",
    "argparse.Namespace",
    "numpy.",
    "collections.",
    "pathlib.",
    "typing.",
    "enum.",
    "yacs.config.",
    "easydict.",
)


class Placeholder:
    """Stands in for a foreign class. Instantiating it (the pickle's NEWOBJ or REDUCE) yields a
    plain ``OrderedDict`` tagged with the pickled class name, because the weights-only unpickler
    fills only exact dict types (SETITEMS) and builds only exact OrderedDicts (BUILD): so dict
    subclasses (Lightning's AttributeDict) and objects with a ``__dict__`` state (callbacks)
    both load, as data. Nothing of the foreign class is imported or run."""

    _pickled_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:  # noqa: D102 - see class docstring
        obj: OrderedDict = OrderedDict()
        obj.__dict__["pickled_class"] = cls._pickled_name
        if args or kwargs:
            obj.__dict__["pickled_args"] = (args, kwargs)
        return obj


def _placeholder_for(full_path: str) -> type:
    return type("Placeholder", (Placeholder,), {"_pickled_name": full_path})


def load_checkpoint_dict(path: str | Path) -> dict:
    """Load a torch checkpoint as data, never as code. Raises CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint (expected the zip format written by torch.save; "
            "the file is of another kind, or truncated)"
        )
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as exc:  # a damaged archive fails here first
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint: {exc}") from None
    refused = [g for g in unsafe if not g.startswith(PLACEHOLDER_NAMESPACES)]
    if refused:
        raise CheckpointError(
            f"{path}: refusing to load: the checkpoint references {', '.join(sorted(refused))}, "
            "which could run code when unpickled"
        )
    stubs: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = [
        (_placeholder_for(g), g) for g in unsafe
    ]
    try:
        with torch.serialization.safe_globals(stubs):
            obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        ValueError,
        KeyError,
        OSError,
        TypeError,
        AttributeError,
    ) as exc:
        raise CheckpointError(f"{path}: corrupt or unreadable checkpoint: {exc}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a checkpoint dict, found {type(obj).__name__}")
    return obj
