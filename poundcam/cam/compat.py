"""The interface of the GradCAM document that started this project, as a thin layer over
ComparativeCAM, with the same defaults as the library and the service. Maps come from the
model's gradients; nothing is synthesized."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..constants import LABELS, CamTarget
from .engine import DEFAULT_METHOD, ComparativeCAM

_CLASS_INDEX: dict[str | int, int] = {**{label: i for i, label in enumerate(LABELS)}, 0: 0, 1: 1}
SCALES = ("shared", "per_map")


class PoundNetGradCAM:
    """``generate_cam(x, target_class)`` -> [B, H, W] maps at input resolution, in 0..1;
    ``generate_comparative_cam(x)`` -> real, fake and signed difference maps plus probabilities.

    Args:
        model: A PoundNet (or any ``ExplainableModel``).
        layer: Vision block explained (negative counts from the end); default (None): the
            method's, as in ComparativeCAM (the last block for HiResCAM).
        target: ``"contrastive"`` (default) or ``"logit"``, as in ComparativeCAM.
        method: ``"hirescam"`` (default), ``"gradcam"`` or ``"relevance"``, as in
            ComparativeCAM.
        scale: ``"shared"`` (default): an image's maps are divided by the larger of its two
            maxima, so a weak map looks weak beside a strong one (as in the rendered
            heatmaps); ``"per_map"``: each map by its own maximum, which shows the strongest
            cell of even a very weak map as 1.0.

    Raises:
        ValueError: For an unknown scale (and whatever ComparativeCAM refuses).
    """

    def __init__(
        self,
        model,
        layer: int | None = None,
        target: str = CamTarget.CONTRASTIVE,
        method: str = DEFAULT_METHOD,
        scale: str = "shared",
    ):
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, not {scale!r}")
        self.model = model
        self.scale = scale
        self.cam = ComparativeCAM(model, layer=layer, target=target, method=method)

    @staticmethod
    def _upsample(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]

    @staticmethod
    def _peak(maps: torch.Tensor) -> torch.Tensor:
        return maps.abs().flatten(1).amax(dim=1)

    @staticmethod
    def _divide(maps: torch.Tensor, peak: torch.Tensor) -> torch.Tensor:
        # an all-zero map stays all zero
        return maps / peak.clamp_min(torch.finfo(maps.dtype).tiny)[:, None, None]

    @classmethod
    def _normalize(cls, maps: torch.Tensor) -> torch.Tensor:
        return cls._divide(maps, cls._peak(maps))

    def generate_cam(self, input_tensor: torch.Tensor, target_class="fake") -> torch.Tensor:
        """One class's map per image at the input's resolution (bilinear), in 0..1.

        Args:
            input_tensor: Normalized images [B, 3, H, W].
            target_class: ``"real"``, ``"fake"``, 0 or 1.

        Returns:
            [B, H, W] float32, scaled as ``scale`` says.

        Raises:
            ValueError: For an unknown class.
            CAMError: If a map cannot be computed.
        """
        if target_class not in _CLASS_INDEX:
            raise ValueError(f"target_class must be 'real', 'fake', 0 or 1, not {target_class!r}")
        res = self.cam.attribute(input_tensor)
        size = input_tensor.shape[-2:]
        real, fake = self._upsample(res.real, size), self._upsample(res.fake, size)
        maps = fake if _CLASS_INDEX[target_class] == 1 else real
        if self.scale == "per_map":
            return self._normalize(maps)
        return self._divide(maps, torch.maximum(self._peak(real), self._peak(fake)))

    def generate_comparative_cam(self, input_tensor: torch.Tensor) -> dict[str, torch.Tensor]:
        """Both class maps and the signed contrastive map at the input's resolution.

        Args:
            input_tensor: Normalized images [B, 3, H, W].

        Returns:
            ``real_cam``, ``fake_cam`` [B, H, W] in 0..1; ``difference`` [B, H, W] in -1..1:
            the signed contrastive map (gradient of logit(fake) - logit(real)), positive where
            the evidence is for "fake" against "real". With the contrastive target it is
            exactly ``fake_cam - real_cam``; with the logit target it comes from one more
            (contrastive) pass. (With ``method="relevance"`` the two maps are not two signs of
            one map: ``difference`` is then the difference of the contrastive target's two
            relevance maps.) ``probs`` and ``logits`` [B, 2].
            Scaling: ``"shared"`` divides all three by the larger of the two class maps'
            maxima; ``"per_map"`` divides each by its own maximum absolute value.

        Raises:
            CAMError: If a map cannot be computed.
        """
        res = self.cam.attribute(input_tensor)
        size = input_tensor.shape[-2:]
        real, fake = self._upsample(res.real, size), self._upsample(res.fake, size)
        if res.target == CamTarget.CONTRASTIVE:
            signed = fake - real
        else:
            contrastive = ComparativeCAM(
                self.model, layer=self.cam.layer, target=CamTarget.CONTRASTIVE, method=self.cam.method
            )
            signed = self._upsample(contrastive.attribute(input_tensor).signed(), size)
        if self.scale == "per_map":
            real, fake, signed = (self._normalize(m) for m in (real, fake, signed))
        else:
            peak = torch.maximum(self._peak(real), self._peak(fake))
            real, fake, signed = (self._divide(m, peak) for m in (real, fake, signed))
        return {
            "real_cam": real,
            "fake_cam": fake,
            "difference": signed,
            "probs": res.probs,
            "logits": res.logits,
        }
