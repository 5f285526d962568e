"""PoundNets with random weights, for tests, benchmarks and smoke runs without a checkpoint.

The weights are scaled so that the logits move with the input (layer-norm gains near 1,
matrices at 1/sqrt(fan-in), CLIP's logit scale of 100): a model whose outputs are flat would
hide differences that a comparison is meant to find. Not a detector: its P(fake) means nothing.
"""

from __future__ import annotations

import torch

from .checkpoint import model_id
from .config import PoundNetConfig
from .poundnet import PoundNet

# Small widths and depths that keep the released layout (prompts, masks, class names); a
# forward pass takes milliseconds on a CPU.
TINY_CONFIG = dict(
    vision_width=64,
    vision_layers=4,
    patch_size=32,
    grid_size=7,
    embed_dim=32,
    text_width=64,
    text_layers=2,
    n_ctx_vision=4,
    n_ctx_text=4,
    prompt_depth_vision=3,
    prompt_depth_text=2,
    prompt_num_text=1,
    class_names=("cat", "dog", "pottedplant"),
)

_NORM_GAINS = ("ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight", "ln_final.weight")


def random_poundnet(seed: int = 0, **config) -> PoundNet:
    """A PoundNet(PoundNetConfig(**config)) with random weights from ``seed``, in eval mode,
    its ``model_id`` set from those weights."""
    torch.manual_seed(seed)
    model = PoundNet(PoundNetConfig(**config))
    with torch.no_grad():
        for name, p in list(model.named_parameters()) + list(model.named_buffers()):
            if name.endswith("attn_mask"):
                continue
            if name.endswith(_NORM_GAINS):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif name == "logit_scale":
                p.fill_(torch.log(torch.tensor(100.0)))
            else:
                p.copy_(torch.randn_like(p) * (p.shape[-1] ** -0.5 if p.dim() > 1 else 0.1))
    model.model_id = model_id(model.state_dict())
    return model.eval()
