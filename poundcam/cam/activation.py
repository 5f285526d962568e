"""Gradient x activation at one point of one block: the shared part of GradCAM and HiResCAM.

The map is computed over the patch tokens of the activation after ``ln_1`` of one vision block
(default: the last). That point lies before the block's attention, so every patch token still
reaches the CLS token and its gradient is the model's own; after the last attention only CLS
reaches the head and the patch gradients are exactly zero (such a choice is reported invalid).

Cost: the model runs up to the explained point without autograd (``forward_to``; bf16 under
CUDA autocast); the graph starts at the explained activation as a fresh leaf
(``forward_from``), so it works with every parameter frozen and a plain input tensor. In the
last block only the CLS query's attention and MLP are computed.

``compile=True`` runs the no-autograd part through ``torch.compile`` (one graph, fixed shapes:
the first batch of each size pays the compilation; ``compile_batch=N`` pads smaller batches to N
rows there, so one compilation serves them all). The graph from the explained activation on
stays eager, so the gradients are computed as without it.
"""

from __future__ import annotations

import abc

import torch

from ..constants import CamTarget
from ..model.intermediates import POINTS, BlockActivation
from .base import CAMMethod, ClassMaps
from .targets import class_gradients


class ActivationCAM(CAMMethod):
    """map[t] = sum_c A[t, c] * W[t, c] for the activation A at the explained point, with the
    weights W derived from the target's gradient G = dscore/dA by ``weights``."""

    default_layer = -1
    default_point = "ln_1"

    def __init__(
        self,
        model,
        layer: int = -1,
        target: str = CamTarget.CONTRASTIVE,
        point: str = "ln_1",
        compile: bool = False,
        compile_batch: int | None = None,
    ):
        if point not in POINTS:
            raise ValueError(f"point must be one of {POINTS}, not {point!r}")
        super().__init__(model, layer, target, point)
        self.compiled = compile
        self.compile_batch = compile_batch if compile else None
        # fixed shapes: a batch of a new size compiles once more instead of a slower dynamic graph
        self._prefix = torch.compile(self._run_prefix, dynamic=False) if compile else self._run_prefix

    @staticmethod
    @abc.abstractmethod
    def weights(grad: torch.Tensor) -> torch.Tensor:
        """Channel weights from the patch tokens' gradients [B, tokens, C]: [B, tokens or 1, C]."""

    def _run_prefix(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        start = self.model.forward_to(x, self.layer, self.point)
        return start.activation, start.residual

    def explained_activation(self, x: torch.Tensor) -> BlockActivation:
        """Run up to the explained point without autograd."""
        with torch.no_grad():
            n = x.shape[0]
            if self.compile_batch is None or n >= self.compile_batch:
                act, residual = self._prefix(x)
            else:
                # zero rows up to the compiled shape; images are independent, extra rows dropped
                pad = x.new_zeros((self.compile_batch - n, *x.shape[1:]))
                act, residual = self._prefix(torch.cat([x, pad]))
                act, residual = act[:n], None if residual is None else residual[:n]
        return BlockActivation(self.layer, self.point, act, residual)

    def class_maps(self, x: torch.Tensor) -> ClassMaps:
        model = self.model
        start = self.explained_activation(x)
        leaf = start.activation.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model.forward_from(start.with_activation(leaf))
            grads = class_gradients(logits, leaf, self.target)
        patches = model.patch_tokens
        acts = leaf.detach()[:, patches].float()
        maps = {}
        invalid: dict[int, str] = {}
        for name, grad in grads.items():
            grad = grad[:, patches].float()
            for i, reason in _gradient_problems(grad, self.layer, self.point, name).items():
                invalid.setdefault(i, reason)
            maps[name] = (acts * self.weights(grad)).sum(dim=-1).reshape(-1, *model.patch_grid)
        if "signed" in maps:
            real, fake = (-maps["signed"]).clamp_min(0), maps["signed"].clamp_min(0)
        else:
            real, fake = maps["real"].clamp_min(0), maps["fake"].clamp_min(0)
        return ClassMaps(real, fake, logits, invalid)


def _gradient_problems(grad: torch.Tensor, layer: int, point: str, name: str) -> dict[int, str]:
    problems: dict[int, str] = {}
    finite = torch.isfinite(grad).flatten(1).all(dim=1)
    nonzero = grad.flatten(1).abs().amax(dim=1) > 0
    for i in torch.nonzero(~finite).flatten().tolist():
        problems[i] = f"non-finite gradients at block {layer} ({point}) for the {name} target"
    for i in torch.nonzero(finite & ~nonzero).flatten().tolist():
        problems[i] = (
            f"all patch-token gradients are zero at block {layer} ({point}) for the "
            f"{name} target: the explained point does not reach the logits through the "
            "patch tokens (a point after the last attention?)"
        )
    return problems
