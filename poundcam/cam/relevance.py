"""Class-specific attention relevance for ViTs, after Chefer, Gur and Wolf, "Generic
Attention-model Explainability for Interpreting Bi-Modal and Encoder-Decoder Transformers"
(ICCV 2021), the rule for self-attention encoders:

    R = I;  for each block b:  R <- R + mean_heads((dA_b * A_b)^+) . R

with A_b the block's attention probabilities and dA_b the target's gradient with respect to
them. The map is the CLS row of R over the patch tokens. It spans every block from ``layer``
(default 0) on, so no layer has to be chosen; docs/faithfulness.md measures it.

Only the CLS row of R is ever read, so R is never formed: the row is carried from the last
block to the first, r <- r + r . Abar_b (N^2 work per block instead of N^3), which also lets the
last block compute its CLS query only (its other rows have zero gradient). PoundNet's deep
visual prompts replace the prompt tokens before some blocks; the discarded tokens' attention
rows get zero gradient in the block before, so the rule needs no special case for them (the
test's reference resets them explicitly and agrees).

Both classes come from one forward: for the contrastive target one backward pass gives dA for
``logit(fake) - logit(real)``, whose positive part weights the fake map and whose negative part
(the gradient of the opposite score) the real map; the logit target takes two backward passes.
Unlike the gradient x activation maps, the two relevance maps are both non-negative sums over
paths, not two signs of one map: they may overlap.

Cost: the embedding runs without autograd; the graph starts at block ``layer``'s normalized
input, so it works on a fully frozen model. Every block then runs with its attention written
out (the probabilities are kept for the backward pass anyway); while the backward pass runs,
each block's gradient is reduced to mean_heads((dA * A)^+) as it arrives, so the per-head
gradients of all blocks are never held at once.
"""

from __future__ import annotations

import torch

from ..constants import CamTarget
from .base import CAMMethod, ClassMaps, non_finite, to_grid
from .targets import FAKE, REAL


class AttentionRelevance(CAMMethod):
    """Gradient-weighted attention relevance (Chefer et al. 2021), both classes."""

    name = "relevance"
    default_layer = 0
    default_point = "input"

    def __init__(
        self,
        model,
        layer: int = 0,
        target: str = CamTarget.CONTRASTIVE,
        point: str = "input",
        compile: bool = False,
        compile_batch: int | None = None,
    ):
        # ``compile`` is accepted for a uniform interface; the only no-autograd part here is
        # the patch embedding, which a compilation would not speed up measurably.
        if point != "input":
            raise ValueError(
                "method 'relevance' explains the tokens entering a block: point "
                f"must be 'input', not {point!r}"
            )
        super().__init__(model, layer, target, point)
        self.compiled = False
        self.compile_batch = None

    def class_maps(self, x: torch.Tensor) -> ClassMaps:
        model = self.model
        with torch.no_grad():
            start = model.forward_to(x, self.layer, "ln_1")
        leaf = start.activation.detach().requires_grad_(True)
        with torch.enable_grad():
            logits, attentions = model.attention_from(start.with_activation(leaf))
            if self.target == CamTarget.CONTRASTIVE:
                weighted = _weighted_attention(
                    (logits[:, FAKE] - logits[:, REAL]).sum(), attentions, signs=(1, -1)
                )
                fake_w, real_w = weighted[1], weighted[-1]
            else:
                (real_w,) = _weighted_attention(
                    logits[:, REAL].sum(), attentions, signs=(1,), retain_graph=True
                ).values()
                (fake_w,) = _weighted_attention(logits[:, FAKE].sum(), attentions, signs=(1,)).values()
        n_tokens = leaf.shape[1]
        real = to_grid(model, cls_relevance(real_w, n_tokens))
        fake = to_grid(model, cls_relevance(fake_w, n_tokens))
        invalid = {}
        for i in sorted(set(non_finite(real) + non_finite(fake) + non_finite(logits))):
            invalid[i] = f"non-finite attention relevance from block {self.layer} on (target {self.target})"
        return ClassMaps(real, fake, logits, invalid)


def _weighted_attention(
    score: torch.Tensor, attentions, signs: tuple[int, ...], retain_graph: bool = False
) -> dict[int, list[torch.Tensor]]:
    """For each sign s: per block, mean over heads of (s * dA * A)^+ [B, queries, tokens] fp32,
    from one backward pass of ``score``.

    Each block's gradient is reduced in a hook as soon as the backward pass produces it. The
    pass is asked for the first block's gradient only: every later block's attention lies on
    the path to it, so every hook fires."""
    out: dict[int, list[torch.Tensor | None]] = {s: [None] * len(attentions) for s in signs}

    def reducer(i: int, probs: torch.Tensor):
        def hook(grad: torch.Tensor) -> None:
            weighted = grad.float() * probs.detach().float()
            for s in signs:
                out[s][i] = (weighted if s > 0 else -weighted).clamp_min(0).mean(dim=1)

        return hook

    handles = [a.probs.register_hook(reducer(i, a.probs)) for i, a in enumerate(attentions)]
    try:
        torch.autograd.grad(score, attentions[0].probs, retain_graph=retain_graph)
    finally:
        for h in handles:
            h.remove()
    for s in signs:  # a block whose attention does not reach the score contributes nothing
        for i, w in enumerate(out[s]):
            if w is None:
                p = attentions[i].probs
                out[s][i] = p.new_zeros(p.shape[0], *p.shape[2:], dtype=torch.float32)
    return out  # type: ignore[return-value]


def cls_relevance(weighted: list[torch.Tensor], n_tokens: int) -> torch.Tensor:
    """The CLS row of R = prod_b (I + Abar_b), [B, tokens].

    Carried from the last block to the first: r <- r + r . Abar_b."""
    b = weighted[0].shape[0]
    r = torch.zeros(b, n_tokens, device=weighted[0].device, dtype=torch.float32)
    r[:, 0] = 1
    for abar in reversed(weighted):
        queries = abar.shape[1]  # 1 for a block that computes the CLS query only
        r = r + torch.bmm(r[:, None, :queries], abar)[:, 0]
    return r
