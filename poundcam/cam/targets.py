"""What the CAM explains: the quantities whose gradients weight the activation channels.

``contrastive``: logit(fake) - logit(real), one backward pass; the fake map is the positive
part of the resulting signed map and the real map the negative part (evidence for "real"
against "fake" is exactly the negation). ``logit``: each class's own logit, two backward
passes through the one retained graph.
"""

from __future__ import annotations

import torch

from ..constants import LABELS, CamTarget, Label, values

TARGETS = values(CamTarget)
REAL, FAKE = LABELS.index(Label.REAL), LABELS.index(Label.FAKE)  # columns of the logits


def class_gradients(logits: torch.Tensor, leaf: torch.Tensor, target: str) -> dict[str, torch.Tensor]:
    """Gradients of the target(s) with respect to ``leaf``, per image.

    Images are independent in the graph, so the gradient of the batch sum is each image's own.
    """
    if target == CamTarget.CONTRASTIVE:
        score = (logits[:, FAKE] - logits[:, REAL]).sum()
        (grad,) = torch.autograd.grad(score, leaf)
        return {"signed": grad}
    if target == CamTarget.LOGIT:
        (g_real,) = torch.autograd.grad(logits[:, REAL].sum(), leaf, retain_graph=True)
        (g_fake,) = torch.autograd.grad(logits[:, FAKE].sum(), leaf)
        return {Label.REAL: g_real, Label.FAKE: g_fake}
    raise ValueError(f"unknown target {target!r}; expected one of {TARGETS}")
