"""ComparativeCAM: GradCAM for PoundNet that explains both classes from one forward pass.

The map is computed over the patch tokens of the activation after ``ln_1`` of one vision
block (default: the last). That point lies before the block's attention, so every patch token
still reaches the CLS token and its gradient is the model's own; after the last attention only
CLS reaches the head and the patch gradients are exactly zero (such a choice raises CAMError).

Cost: blocks before the explained one run without autograd (bf16 under CUDA autocast); the
graph starts at the explained activation as a fresh leaf, so the CAM works with every parameter
frozen and a plain input tensor. When the explained block is the last one, only the CLS query
of its attention and MLP is computed: the other tokens' outputs never reach the logits.

``compile=True`` runs that no-autograd part through ``torch.compile`` (one graph, fixed shapes:
the first batch of each size pays the compilation; ``compile_batch=N`` pads smaller batches to N
rows there, so one compilation serves them all). The graph from the explained activation on
stays eager, so the gradients are computed as without it.
"""
from __future__ import annotations

import dataclasses

import torch

from ..errors import CAMError
from .targets import TARGETS, class_gradients

POINTS = ("ln_1", "output")
METHODS = ("gradcam", "hirescam")


@dataclasses.dataclass
class CAMResult:
    """Maps for a batch. ``real``/``fake``: [B, grid, grid] float32, raw and non-negative.

    ``invalid`` maps batch index -> reason for images whose map could not be computed
    (only filled when ``attribute(..., on_invalid="report")``); their maps are all zero and
    must not be shown.
    """

    real: torch.Tensor
    fake: torch.Tensor
    logits: torch.Tensor
    probs: torch.Tensor
    layer: int
    target: str
    point: str = "ln_1"
    invalid: dict[int, str] = dataclasses.field(default_factory=dict)

    @property
    def grid(self) -> int:
        return self.real.shape[-1]

    def signed(self) -> torch.Tensor:
        """fake - real: for the contrastive target, the one signed map both parts come from."""
        return self.fake - self.real

    def item(self, i: int) -> "CAMResult":
        return CAMResult(self.real[i:i + 1], self.fake[i:i + 1], self.logits[i:i + 1],
                         self.probs[i:i + 1], self.layer, self.target, self.point,
                         {0: self.invalid[i]} if i in self.invalid else {})


class ComparativeCAM:
    """``ComparativeCAM(model, layer=-1, target="contrastive").attribute(x)``.

    layer:  index of the vision block whose activation is explained (negative from the end).
    target: ``"contrastive"`` (each class's logit minus the other's: evidence for it against
            the other; the two maps are the positive and negative parts of one signed map) or
            ``"logit"`` (each class's own logit: what matches that class's prompt).
    point:  ``"ln_1"`` (default; the block's normalized input, before its attention) or
            ``"output"`` (the block's output; for the last block that is after the last
            attention, where patch gradients vanish, and attribute() raises CAMError).
    method: how gradients weight the activation A of a patch token, map = relu(sum_c w_c A_c):
            ``"gradcam"`` (default): w_c is the gradient of channel c averaged over all patch
            tokens (Selvaraju et al.); ``"hirescam"``: w_c is the token's own gradient
            (Draelos & Carin), so the map is the gradient x activation of each token. Both are
            the model's own gradients; the faithfulness evaluation compares them.
    """

    def __init__(self, model, layer: int = -1, target: str = "contrastive", point: str = "ln_1",
                 method: str = "gradcam", compile: bool = False, compile_batch: int | None = None):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, not {method!r}")
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, not {target!r}")
        if point not in POINTS:
            raise ValueError(f"point must be one of {POINTS}, not {point!r}")
        blocks = model.visual.transformer.resblocks
        n = len(blocks)
        if not -n <= layer < n:
            raise ValueError(f"layer {layer} out of range for a ViT with {n} blocks")
        self.model = model
        self.layer = layer % n
        self.target = target
        self.point = point
        self.method = method
        self.compiled = compile
        self.compile_batch = compile_batch if compile else None
        # fixed shapes: a batch of a new size compiles once more instead of a slower dynamic graph
        self._prefix = torch.compile(self._run_prefix, dynamic=False) if compile else self._run_prefix

    @property
    def config_id(self) -> str:
        """Identifies the CAM configuration in result keys and database rows."""
        return f"{self.method}-{self.point}-L{self.layer}-{self.target}"

    def _explained_activation(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run up to the explained point without autograd: (residual stream, activation)."""
        with torch.no_grad():
            n = x.shape[0]
            if self.compile_batch is None or n >= self.compile_batch:
                return self._prefix(x)
            # zero rows up to the compiled shape; images are independent, the extra rows are dropped
            pad = x.new_zeros((self.compile_batch - n, *x.shape[1:]))
            h, act = self._prefix(torch.cat([x, pad]))
            return h[:n], act[:n]

    def _run_prefix(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        visual = self.model.visual
        blocks = visual.transformer.resblocks
        h = visual.embed(x)
        for block in blocks[: self.layer]:
            h = block(h)
        block = blocks[self.layer]
        if self.point == "output":
            return h, block(h)
        h = block.insert_prompt(h)
        return h, block.ln_1(h)

    def _finish(self, h: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """From the explained activation (a graph leaf) to image features."""
        visual = self.model.visual
        blocks = visual.transformer.resblocks
        last = len(blocks) - 1
        if self.point == "output":
            out, start = act, self.layer + 1
        else:
            block = blocks[self.layer]
            if self.layer == last:
                out = block.forward_cls(h, act)
            else:
                out = block.forward_attention(h, act)
            start = self.layer + 1
        for i in range(start, len(blocks)):
            if i == last:
                b = blocks[i]
                out = b.insert_prompt(out)
                out = b.forward_cls(out, b.ln_1(out))
            else:
                out = blocks[i](out)
        return visual.head(out)

    def attribute(self, x: torch.Tensor, on_invalid: str = "raise") -> CAMResult:
        """Maps for a normalized batch [B, 3, H, W]. ``on_invalid``: ``"raise"`` (CAMError) or
        ``"report"`` (record the reason in ``result.invalid`` and go on with the others)."""
        model = self.model
        # Gradients are needed even when the caller runs under torch.inference_mode().
        with torch.inference_mode(False), model.autocast(x.device):
            h, act = self._explained_activation(x)
            leaf = act.detach().requires_grad_(True)
            with torch.enable_grad():
                feats = self._finish(h.detach(), leaf)
                logits = model.logits_from_features(feats)
                grads = class_gradients(logits, leaf, self.target)
        patches = self.model.visual.patch_token_slice()
        g = self.model.visual.grid_size
        acts = leaf.detach()[:, patches].float()
        maps = {}
        invalid: dict[int, str] = {}
        for name, grad in grads.items():
            grad = grad[:, patches].float()
            for i, reason in _gradient_problems(grad, self.layer, self.point, name).items():
                invalid.setdefault(i, reason)
            # GradCAM: channel weights = mean gradient over tokens; HiResCAM: each token's own
            weights = grad.mean(dim=1, keepdim=True) if self.method == "gradcam" else grad
            maps[name] = (acts * weights).sum(dim=-1).reshape(-1, *g)
        if "signed" in maps:
            real, fake = (-maps["signed"]).clamp_min(0), maps["signed"].clamp_min(0)
        else:
            real, fake = maps["real"].clamp_min(0), maps["fake"].clamp_min(0)
        if invalid:
            if on_invalid == "raise":
                raise CAMError("; ".join(f"image {i}: {r}" for i, r in sorted(invalid.items())))
            for i in invalid:
                real[i] = 0
                fake[i] = 0
        logits = logits.detach().float()
        return CAMResult(real=real.contiguous(), fake=fake.contiguous(), logits=logits,
                         probs=logits.softmax(dim=-1), layer=self.layer, target=self.target,
                         point=self.point, invalid=invalid)


def _gradient_problems(grad: torch.Tensor, layer: int, point: str, name: str) -> dict[int, str]:
    problems: dict[int, str] = {}
    finite = torch.isfinite(grad).flatten(1).all(dim=1)
    nonzero = grad.flatten(1).abs().amax(dim=1) > 0
    for i in torch.nonzero(~finite).flatten().tolist():
        problems[i] = f"non-finite gradients at block {layer} ({point}) for the {name} target"
    for i in torch.nonzero(finite & ~nonzero).flatten().tolist():
        problems[i] = (f"all patch-token gradients are zero at block {layer} ({point}) for the "
                       f"{name} target: the explained point does not reach the logits through the "
                       "patch tokens (a point after the last attention?)")
    return problems
