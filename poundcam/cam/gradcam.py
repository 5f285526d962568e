"""GradCAM (Selvaraju et al., ICCV 2017) on a ViT block: one weight per channel, the gradient
averaged over the patch tokens."""

from __future__ import annotations

import torch

from ..constants import CamMethod
from .activation import ActivationCAM


class GradCAM(ActivationCAM):
    """map[t] = sum_c A[t, c] * mean_t' G[t', c]. Averaging over all tokens can let the rest of
    the image outvote a small region (docs/faithfulness.md)."""

    name = CamMethod.GRADCAM

    @staticmethod
    def weights(grad: torch.Tensor) -> torch.Tensor:
        return grad.mean(dim=1, keepdim=True)
