"""The shared base of the CAM methods: the result object and the method interface.

One small file per method builds on it (``gradcam.py``, ``hirescam.py``, ``relevance.py``);
``ComparativeCAM`` (engine.py) picks one and turns its maps into a :class:`CAMResult`.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import ClassVar

import torch

from ..constants import CamMethod
from .targets import TARGETS


@dataclasses.dataclass
class CAMResult:
    """Maps for a batch. ``real``/``fake``: [B, grid, grid] float32, raw and non-negative.

    ``invalid`` maps batch index -> reason for images whose map could not be computed
    (only filled when ``attribute(..., on_invalid="report")``); their maps are all zero and
    must not be shown. ``layer``, ``point`` and ``method`` say what was explained (for
    ``method="relevance"``: the tokens entering block ``layer``, point ``"input"``).
    """

    real: torch.Tensor
    fake: torch.Tensor
    logits: torch.Tensor
    probs: torch.Tensor
    layer: int
    target: str
    point: str = "ln_1"
    invalid: dict[int, str] = dataclasses.field(default_factory=dict)
    method: str = CamMethod.HIRESCAM

    @property
    def grid(self) -> int:
        return self.real.shape[-1]

    def signed(self) -> torch.Tensor:
        """The comparative map, fake - real [B, grid, grid].

        For the gradient methods with the contrastive target this is the one signed map both
        parts come from (they are its positive and negative parts); otherwise the difference of
        two maps that may overlap.
        """
        return self.fake - self.real

    def item(self, i: int) -> CAMResult:
        """Image ``i`` of the batch as a result of batch size 1."""
        return CAMResult(
            self.real[i : i + 1],
            self.fake[i : i + 1],
            self.logits[i : i + 1],
            self.probs[i : i + 1],
            self.layer,
            self.target,
            self.point,
            {0: self.invalid[i]} if i in self.invalid else {},
            self.method,
        )


@dataclasses.dataclass
class ClassMaps:
    """What a method computes for a batch, before ComparativeCAM applies its invalid policy.

    real, fake: [B, gh, gw] float32, non-negative. logits: [B, 2]. invalid: index -> reason.
    """

    real: torch.Tensor
    fake: torch.Tensor
    logits: torch.Tensor
    invalid: dict[int, str]


class CAMMethod(abc.ABC):
    """One way of computing the two class maps of a model, from one forward pass.

    Subclasses set ``name``, ``default_layer`` and ``default_point`` and implement
    ``class_maps``. They use only the
    model's public entry points (poundcam/cam/protocol.py).
    """

    name: ClassVar[str]
    default_layer: ClassVar[int]
    default_point: ClassVar[str]

    def __init__(
        self,
        model,
        layer: int,
        target: str,
        point: str,
        compile: bool = False,
        compile_batch: int | None = None,
    ):
        # ``compile`` and ``compile_batch`` are part of every method's constructor (ComparativeCAM
        # passes them); a method that compiles something handles them itself.
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, not {target!r}")
        self.model = model
        self.layer = model.block_index(layer)
        self.target = target
        self.point = point

    @property
    def config_id(self) -> str:
        """Identifies the configuration in result keys and database rows."""
        return f"{self.name}-{self.point}-L{self.layer}-{self.target}"

    @abc.abstractmethod
    def class_maps(self, x: torch.Tensor) -> ClassMaps:
        """Both class maps of a normalized batch [B, 3, H, W] (autograd is enabled by the caller)."""


def to_grid(model, per_token: torch.Tensor) -> torch.Tensor:
    """[B, tokens] -> [B, rows, cols]: the patch tokens, row-major, as the map."""
    return per_token[:, model.patch_tokens].reshape(-1, *model.patch_grid)


def non_finite(t: torch.Tensor) -> list[int]:
    """Batch indices whose values are not all finite."""
    return torch.nonzero(~torch.isfinite(t).flatten(1).all(dim=1)).flatten().tolist()
