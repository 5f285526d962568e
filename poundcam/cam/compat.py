"""The interface of the GradCAM document that started this project, as a thin layer over
ComparativeCAM. Maps come from the model's gradients; nothing is synthesized."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .engine import ComparativeCAM

_CLASS_INDEX = {"real": 0, "fake": 1, 0: 0, 1: 1}


class PoundNetGradCAM:
    """``generate_cam(x, target_class)`` -> [B, H, W] maps at input resolution, in 0..1 per image;
    ``generate_comparative_cam(x)`` -> real, fake and difference maps plus probabilities."""

    def __init__(self, model, layer: int = -1, target: str = "logit"):
        self.model = model
        self.cam = ComparativeCAM(model, layer=layer, target=target)

    @staticmethod
    def _upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]

    @staticmethod
    def _normalize(maps: torch.Tensor) -> torch.Tensor:
        peak = maps.flatten(1).amax(dim=1).clamp_min(torch.finfo(maps.dtype).tiny)
        return maps / peak[:, None, None]  # an all-zero map stays all zero

    def generate_cam(self, input_tensor: torch.Tensor, target_class="fake") -> torch.Tensor:
        if target_class not in _CLASS_INDEX:
            raise ValueError(f"target_class must be 'real', 'fake', 0 or 1, not {target_class!r}")
        res = self.cam.attribute(input_tensor)
        maps = res.fake if _CLASS_INDEX[target_class] == 1 else res.real
        return self._normalize(self._upsample(maps, input_tensor.shape[-2:]))

    def generate_comparative_cam(self, input_tensor: torch.Tensor) -> dict[str, torch.Tensor]:
        res = self.cam.attribute(input_tensor)
        size = input_tensor.shape[-2:]
        real, fake = self._upsample(res.real, size), self._upsample(res.fake, size)
        peak = torch.maximum(real.flatten(1).amax(1), fake.flatten(1).amax(1)).clamp_min(1e-30)
        real, fake = real / peak[:, None, None], fake / peak[:, None, None]
        return {"real_cam": real, "fake_cam": fake, "difference": fake - real,
                "probs": res.probs, "logits": res.logits}
