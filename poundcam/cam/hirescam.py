"""HiResCAM (Draelos and Carin, 2020) on a ViT block: each token keeps its own gradient."""

from __future__ import annotations

import torch

from ..constants import CamMethod
from .activation import ActivationCAM


class HiResCAM(ActivationCAM):
    """map[t] = sum_c A[t, c] * G[t, c], the token's gradient x activation: its first-order
    contribution to the score. The default method."""

    name = CamMethod.HIRESCAM

    @staticmethod
    def weights(grad: torch.Tensor) -> torch.Tensor:
        return grad
