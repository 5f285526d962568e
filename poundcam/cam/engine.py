"""ComparativeCAM: class activation maps for PoundNet that explain both classes from one forward.

The methods live one per file on a shared base (base.py): ``hirescam`` (the default) and
``gradcam`` weight the activation of one block by its gradient (activation.py); ``relevance``
propagates gradient-weighted attention through every block (relevance.py). Each uses only the
model's public entry points (protocol.py), never its blocks.
"""

from __future__ import annotations

import torch

from ..constants import CamMethod, CamTarget
from ..errors import CAMError
from .base import CAMMethod, CAMResult
from .gradcam import GradCAM
from .hirescam import HiResCAM
from .relevance import AttentionRelevance

METHODS: dict[str, type[CAMMethod]] = {
    CamMethod.HIRESCAM: HiResCAM,
    CamMethod.GRADCAM: GradCAM,
    # the deep maps (POUNDCAM_DEEP_MAPS), not a cam_method
    AttentionRelevance.name: AttentionRelevance,
}
DEFAULT_METHOD = CamMethod.HIRESCAM
ON_INVALID = ("raise", "report")

__all__ = ["CAMResult", "ComparativeCAM", "DEFAULT_METHOD", "METHODS"]


class ComparativeCAM:
    """Both class maps of a batch, bound to a model and a configuration (like Captum's
    attribution classes): ``ComparativeCAM(model).attribute(x)``.

    Args:
        model: A PoundNet, or any model implementing ``poundcam.cam.protocol.ExplainableModel``
            (``AttentionExplainableModel`` for ``method="relevance"``).
        layer: Index of the vision block explained (negative counts from the end). Default
            (None): the method's own, the last block for ``"hirescam"`` and ``"gradcam"``, block
            0 for ``"relevance"`` (whose map spans every block from ``layer`` on).
        target: ``"contrastive"`` (default; each class's logit minus the other's: evidence for
            it against the other; with the gradient methods the two maps are the positive and
            negative parts of one signed map) or ``"logit"`` (each class's own logit: what
            matches that class's prompt).
        point: For ``"hirescam"`` and ``"gradcam"``: ``"ln_1"`` (default; the block's
            normalized input, before its attention) or ``"output"`` (the block's output; for
            the last block that is after the last attention, where patch gradients vanish, and
            attribute() reports it invalid). For ``"relevance"``: ``"input"`` (the tokens
            entering the block), its only point. None: the method's default.
        method: ``"hirescam"`` (default; Draelos and Carin): each patch token's gradient x
            activation; ``"gradcam"`` (Selvaraju et al.): the activation weighted by the
            gradient averaged over all patch tokens; ``"relevance"`` (Chefer, Gur and Wolf
            2021): gradient-weighted attention propagated through every block, about 2.5x the
            cost of the others. docs/cam.md compares them and says when to use which.
        compile: Run the no-autograd part (up to the explained point) through ``torch.compile``
            (the gradient methods; ignored by ``"relevance"``, which has no such part to speak of).
        compile_batch: With ``compile``, pad smaller batches to this many rows there, so one
            compilation serves every batch.

    Raises:
        ValueError: For an unknown method, target or point, or a layer out of range.
    """

    def __init__(
        self,
        model,
        layer: int | None = None,
        target: str = CamTarget.CONTRASTIVE,
        point: str | None = None,
        method: str = DEFAULT_METHOD,
        compile: bool = False,
        compile_batch: int | None = None,
    ):
        if method not in METHODS:
            raise ValueError(f"method must be one of {tuple(METHODS)}, not {method!r}")
        cls = METHODS[method]
        self.model = model
        self.method = method
        self.explainer = cls(
            model,
            layer=cls.default_layer if layer is None else layer,
            target=target,
            point=cls.default_point if point is None else point,
            compile=compile,
            compile_batch=compile_batch,
        )

    @property
    def layer(self) -> int:
        """The explained block, as a non-negative index."""
        return self.explainer.layer

    @property
    def target(self) -> str:
        """The target the maps explain: ``"contrastive"`` or ``"logit"``."""
        return self.explainer.target

    @property
    def point(self) -> str:
        """Where in the explained block the maps are taken (``"ln_1"``, ``"output"`` or
        ``"input"``)."""
        return self.explainer.point

    @property
    def compiled(self) -> bool:
        """Whether the part before the explained point runs through ``torch.compile``."""
        return getattr(self.explainer, "compiled", False)

    @property
    def compile_batch(self) -> int | None:
        """The batch size compiled for (smaller batches are padded to it); None without
        ``compile``."""
        return getattr(self.explainer, "compile_batch", None)

    @property
    def config_id(self) -> str:
        """Identifies the CAM configuration in result keys and database rows, e.g.
        ``hirescam-ln_1-L23-contrastive``."""
        return self.explainer.config_id

    def attribute(self, x: torch.Tensor, on_invalid: str = "raise") -> CAMResult:
        """Both class maps, the logits and the probabilities of a batch, from one forward pass.

        Works with every parameter frozen, on a plain input, and inside ``torch.no_grad()`` or
        ``torch.inference_mode()``; leaves no ``.grad`` on the model.

        Args:
            x: Normalized images [B, 3, H, W].
            on_invalid: ``"raise"`` (default) or ``"report"``: for images whose map cannot be
                computed (non-finite or vanishing gradients), record the reason in
                ``result.invalid`` and set their maps to zero instead of raising.

        Returns:
            A CAMResult: ``real`` and ``fake`` [B, grid, grid] float32, raw and non-negative;
            ``logits`` and ``probs`` [B, 2] (column 0 real, 1 fake).

        Raises:
            CAMError: With ``on_invalid="raise"``, if any image's map cannot be computed; the
                message names each image and its reason.
            ValueError: For an unknown ``on_invalid``.
        """
        if on_invalid not in ON_INVALID:
            raise ValueError(f"on_invalid must be one of {ON_INVALID}, not {on_invalid!r}")
        # Gradients are needed even when the caller runs under torch.inference_mode().
        with torch.inference_mode(False):
            maps = self.explainer.class_maps(x)
        real, fake, invalid = maps.real, maps.fake, maps.invalid
        if invalid:
            if on_invalid == "raise":
                raise CAMError("; ".join(f"image {i}: {r}" for i, r in sorted(invalid.items())))
            for i in invalid:
                real[i] = 0
                fake[i] = 0
        logits = maps.logits.detach().float()
        return CAMResult(
            real=real.detach().contiguous(),
            fake=fake.detach().contiguous(),
            logits=logits,
            probs=logits.softmax(dim=-1),
            layer=self.layer,
            target=self.target,
            point=self.point,
            invalid=invalid,
            method=self.method,
        )
