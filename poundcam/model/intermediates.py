"""What a model hands an explainer: an activation in the middle of the vision tower, from which
the forward can be finished, and the attention probabilities of the blocks after it.

``PoundNet.forward_to`` returns a :class:`BlockActivation`; ``PoundNet.forward_from`` finishes
the forward from one (to the logits) and ``PoundNet.attention_from`` does the same while keeping
every block's attention probabilities in the graph. These are the only entry points the CAM
uses, in the spirit of timm's ``forward_intermediates`` / ``forward_head``.
"""

from __future__ import annotations

import dataclasses

import torch

# Where in a block an activation is taken: "ln_1" is the block's normalized input (before its
# attention: every token still reaches the CLS query); "output" is what the block returns.
POINTS = ("ln_1", "output")


@dataclasses.dataclass(frozen=True)
class BlockActivation:
    """An activation of vision block ``layer`` at ``point``, and what finishing the forward needs.

    Attributes:
        layer: Index of the vision block (0-based, non-negative).
        point: ``"ln_1"`` or ``"output"`` (see ``POINTS``).
        activation: [B, tokens, width]: the block's ``ln_1`` output or its output.
        residual: For ``"ln_1"``: the block's input (its prompt tokens already inserted), which
            the attention's residual connection adds back; None for ``"output"``.
    """

    layer: int
    point: str
    activation: torch.Tensor
    residual: torch.Tensor | None = None

    def with_activation(self, activation: torch.Tensor) -> BlockActivation:
        """The same position with another activation tensor (e.g. a fresh graph leaf).

        Args:
            activation: A tensor shaped like ``self.activation``.

        Returns:
            A new BlockActivation; ``residual`` is detached, so no gradient flows around the
            new activation into the part of the model before it.

        Raises:
            ValueError: If the shape differs.
        """
        if activation.shape != self.activation.shape:
            raise ValueError(
                f"activation shape {tuple(activation.shape)} differs from {tuple(self.activation.shape)}"
            )
        residual = None if self.residual is None else self.residual.detach()
        return dataclasses.replace(self, activation=activation, residual=residual)


@dataclasses.dataclass(frozen=True)
class BlockAttention:
    """One block's attention probabilities, kept in the autograd graph.

    Attributes:
        layer: Index of the vision block.
        probs: [B, heads, queries, tokens], softmax over the last axis. ``queries`` is 1 (the
            CLS token only) for the last block, whose other rows never reach the logits.
    """

    layer: int
    probs: torch.Tensor
