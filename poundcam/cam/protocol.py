"""What ComparativeCAM needs from a model: a small set of public entry points, nothing inside.

PoundNet implements both protocols; any vision transformer that does can be explained (the
tests explain a toy model that implements only this).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from ..model.intermediates import BlockActivation, BlockAttention


@runtime_checkable
class ExplainableModel(Protocol):
    """A ViT classifier over two classes (logit column 0 real, 1 fake) that can be run up to a
    block and on from it. Enough for the gradient x activation methods (GradCAM, HiResCAM)."""

    @property
    def num_blocks(self) -> int: ...

    @property
    def patch_grid(self) -> tuple[int, int]: ...

    @property
    def patch_tokens(self) -> slice: ...

    def block_index(self, layer: int) -> int: ...

    def forward_to(self, x: torch.Tensor, layer: int, point: str = "ln_1") -> BlockActivation: ...

    def forward_from(self, start: BlockActivation) -> torch.Tensor: ...


@runtime_checkable
class AttentionExplainableModel(ExplainableModel, Protocol):
    """An ExplainableModel that can also return its attention probabilities in the graph
    (what the attention relevance method needs)."""

    def attention_from(self, start: BlockActivation) -> tuple[torch.Tensor, list[BlockAttention]]: ...
