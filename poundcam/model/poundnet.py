"""PoundNet as plain nn.Modules on open_clip's transformer blocks.

Layout and names follow open_clip (``model.visual.transformer.resblocks``) so that tools which
hook layers find them. The released model's prompt tokens ride on the blocks themselves
(``VPT_shallow``), as in the official checkpoint.
"""
from __future__ import annotations

import contextlib
from functools import lru_cache

import torch
import torch.nn.functional as F
from open_clip.transformer import LayerNorm, QuickGELU, ResidualAttentionBlock
from torch import nn

from .config import PoundNetConfig


def fp16_round(t: torch.Tensor) -> torch.Tensor:
    """The official code casts prompt tensors to fp16 before joining fp32 activations."""
    return t.to(torch.float16).to(t.dtype)


class PromptedBlock(ResidualAttentionBlock):
    """open_clip's pre-LN residual block (QuickGELU) that may own a deep prompt.

    With ``n_prompt > 0`` the block owns ``VPT_shallow`` [n_prompt, width]; before the block
    runs, the prompt tokens of the sequence (``prompt_slice``) are replaced by it.
    """

    def __init__(self, width: int, heads: int, n_prompt: int = 0, prompt_at_end: bool = True,
                 prompt_offset: int = 1):
        super().__init__(width, heads, act_layer=QuickGELU, norm_layer=LayerNorm, batch_first=True)
        self.n_prompt = n_prompt
        self.prompt_at_end = prompt_at_end
        self.prompt_offset = prompt_offset
        if n_prompt:
            self.VPT_shallow = nn.Parameter(torch.zeros(n_prompt, width))

    def insert_prompt(self, x: torch.Tensor) -> torch.Tensor:
        if not self.n_prompt:
            return x
        prompt = fp16_round(self.VPT_shallow).to(x.dtype).expand(x.shape[0], -1, -1)
        if self.prompt_at_end:
            return torch.cat([x[:, : -self.n_prompt], prompt], dim=1)
        start = self.prompt_offset
        return torch.cat([x[:, :start], prompt, x[:, start + self.n_prompt:]], dim=1)

    def forward_attention(self, x: torch.Tensor, normed: torch.Tensor,
                          attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Finish the block from its ``ln_1`` activation ``normed`` (the CAM engine starts here)."""
        x = x + self.ls_1(self.attention(q_x=normed, attn_mask=attn_mask))
        return x + self.ls_2(self.mlp(self.ln_2(x)))

    def forward_cls(self, x: torch.Tensor, normed: torch.Tensor) -> torch.Tensor:
        """The block's output for token 0 only, from its ``ln_1`` activation: the CLS query
        attends to every token. After the last block nothing but CLS reaches the head, so
        this gives the same features for 1/L of the block's token work."""
        cls = x[:, :1] + self.ls_1(self.attention(q_x=normed[:, :1], k_x=normed, v_x=normed))
        return cls + self.ls_2(self.mlp(self.ln_2(cls)))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.insert_prompt(x)
        return self.forward_attention(x, self.ln_1(x), attn_mask)


class PromptedTransformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, n_prompt: int, prompt_depth: int,
                 prompt_at_end: bool):
        super().__init__()
        self.width = width
        self.resblocks = nn.ModuleList(
            PromptedBlock(width, heads, n_prompt if 1 <= i < prompt_depth else 0, prompt_at_end)
            for i in range(layers)
        )

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, attn_mask)
        return x


class PromptedVisionTransformer(nn.Module):
    """CLIP ViT (OpenAI layout) with deep visual prompts appended after the patch tokens."""

    def __init__(self, cfg: PoundNetConfig):
        super().__init__()
        width = cfg.vision_width
        self.patch_size = cfg.patch_size
        self.grid_size = (cfg.grid_size, cfg.grid_size)
        self.image_size = (cfg.image_size, cfg.image_size)
        self.n_prompt = cfg.n_ctx_vision
        self.output_dim = cfg.embed_dim
        self.conv1 = nn.Conv2d(3, width, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.positional_embedding = nn.Parameter(torch.zeros(cfg.grid_size ** 2 + 1, width))
        self.VPT = nn.Parameter(torch.zeros(cfg.n_ctx_vision, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = PromptedTransformer(width, cfg.vision_layers, cfg.vision_heads,
                                               cfg.n_ctx_vision, cfg.prompt_depth_vision,
                                               prompt_at_end=True)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(torch.zeros(width, cfg.embed_dim))

    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    def patch_token_slice(self) -> slice:
        """Sequence positions of the patch tokens: 0 is CLS, prompts come last."""
        return slice(1, 1 + self.num_patches)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens entering block 0: [CLS, patches (row-major), prompts], after ln_pre."""
        x = self.conv1(x)
        x = x.flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        prompt = fp16_round(self.VPT).to(x.dtype).expand(x.shape[0], -1, -1)
        return self.ln_pre(torch.cat([x, prompt], dim=1))

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Image features from the final token sequence: ln_post(CLS) @ proj."""
        return self.ln_post(x[:, 0]) @ self.proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image features [B, E]. The last block computes the CLS token only (forward_cls);
        a hook on that block's output sees [B, 1, W]. Every ``ln_1`` sees all tokens."""
        *blocks, last = self.transformer.resblocks
        x = self.embed(x)
        for block in blocks:
            x = block(x)
        x = last.insert_prompt(x)
        return self.head(last.forward_cls(x, last.ln_1(x)))


class PromptedTextEncoder(nn.Module):
    """CLIP text transformer fed with prompt embeddings (no token table needed)."""

    def __init__(self, cfg: PoundNetConfig):
        super().__init__()
        self.context_length = cfg.context_length
        self.positional_embedding = nn.Parameter(torch.zeros(cfg.context_length, cfg.text_width))
        self.transformer = PromptedTransformer(cfg.text_width, cfg.text_layers, cfg.text_heads,
                                               cfg.n_ctx_text, cfg.prompt_depth_text,
                                               prompt_at_end=False)
        self.ln_final = LayerNorm(cfg.text_width)
        self.text_projection = nn.Parameter(torch.zeros(cfg.text_width, cfg.embed_dim))
        self.register_buffer("attn_mask", self.causal_mask(cfg.context_length), persistent=False)

    @staticmethod
    def causal_mask(n: int) -> torch.Tensor:
        return torch.full((n, n), float("-inf")).triu_(1)

    def forward(self, prompts: torch.Tensor, eot_index: int) -> torch.Tensor:
        x = prompts + self.positional_embedding.to(prompts.dtype)
        x = self.transformer(x, self.attn_mask.to(x.dtype))
        x = self.ln_final(x)
        return x[:, eot_index] @ self.text_projection


class PromptLearner(nn.Module):
    """The learned text contexts and the stored token embeddings around them."""

    def __init__(self, cfg: PoundNetConfig):
        super().__init__()
        n_cls, p, d = len(cfg.class_names), cfg.prompt_num_text, cfg.text_width
        n_suffix = cfg.context_length - 1 - cfg.n_ctx_text
        self.prompt_num = p
        self.ctx_positive = nn.Parameter(torch.zeros(p, cfg.n_ctx_text, d))  # fake side
        self.ctx_negative = nn.Parameter(torch.zeros(p, cfg.n_ctx_text, d))  # real side
        self.register_buffer("token_prefix", torch.zeros(n_cls, 2 * p, 1, d))
        self.register_buffer("token_suffix", torch.zeros(n_cls, 2 * p, n_suffix, d))

    def forward(self) -> torch.Tensor:
        """The two prompt embeddings, ordered [real, fake]: [2, context_length, width]."""
        n_cls, p = self.token_prefix.shape[0], self.prompt_num
        ctx = torch.cat([self.ctx_positive, self.ctx_negative], dim=0)  # slots: fake..., real...
        ctx = ctx.unsqueeze(0).expand(n_cls, -1, -1, -1)
        prompts = torch.cat([self.token_prefix, ctx, self.token_suffix], dim=2)
        per_slot = prompts.mean(dim=0)  # average over class names
        fake, real = per_slot[:p].mean(dim=0), per_slot[p:].mean(dim=0)
        return torch.stack([real, fake])


@lru_cache(maxsize=None)
def _bpe_token_count(name: str) -> int:
    return len(_tokenizer().encode(name.replace("_", " ")))


@lru_cache(maxsize=1)
def _tokenizer():
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


def eot_index(cfg: PoundNetConfig) -> int:
    """Position whose feature stands for the prompt (see poundnet-format.md, Text side)."""
    return 1 + cfg.n_ctx_text + max(_bpe_token_count(n) for n in cfg.class_names)


class PoundNet(nn.Module):
    """Real/fake detector: ``model(x)`` maps a normalized batch [B, 3, H, W] to logits [B, 2]
    (column 0 = real, column 1 = fake)."""

    CLASSES = ("real", "fake")

    def __init__(self, cfg: PoundNetConfig | None = None):
        super().__init__()
        self.config = cfg = cfg or PoundNetConfig()
        self.visual = PromptedVisionTransformer(cfg)
        self.text = PromptedTextEncoder(cfg)
        self.prompt_learner = PromptLearner(cfg)
        self.logit_scale = nn.Parameter(torch.tensor(0.0))
        self.eot_index = eot_index(cfg)
        self.model_id: str | None = None  # set by the loaders: digest of the tensors
        self.autocast_dtype: torch.dtype | None = torch.bfloat16  # used on CUDA only
        self._text_cache: tuple[tuple, torch.Tensor] | None = None

    # -- text side: constant at inference, computed once and cached -----------------------
    def _text_params(self) -> list[torch.Tensor]:
        return [*self.text.parameters(), *self.prompt_learner.parameters(), *self.prompt_learner.buffers()]

    def text_features(self) -> torch.Tensor:
        """Normalized [real, fake] text features [2, E] in fp32.

        Cached; the cache key holds every text tensor's version counter and storage, so an
        optimizer step or a load_state_dict invalidates it. While the prompts are being
        trained (grad enabled and required) they are recomputed so gradients flow.
        """
        params = self._text_params()
        training = torch.is_grad_enabled() and any(p.requires_grad for p in params)
        key = tuple((p._version, p.data_ptr(), p.device, p.dtype) for p in params)
        if not training and self._text_cache is not None and self._text_cache[0] == key:
            return self._text_cache[1]
        # Never cache an inference-mode tensor: the CAM engine later differentiates through
        # the logits, and autograd refuses tensors created under torch.inference_mode().
        grad_mode = contextlib.nullcontext() if training else torch.no_grad()
        with torch.inference_mode(False), grad_mode, self.autocast_off():
            feats = self.text(self.prompt_learner(), self.eot_index).float()
            feats = F.normalize(feats, dim=-1)
        if not training:
            self._text_cache = (key, feats.detach())
        return feats

    # -- vision side ------------------------------------------------------------------------
    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """bf16 autocast on CUDA (LayerNorm and logits stay fp32); nothing on CPU."""
        if device.type == "cuda" and self.autocast_dtype is not None:
            return torch.autocast("cuda", dtype=self.autocast_dtype)
        return contextlib.nullcontext()

    @staticmethod
    def autocast_off() -> contextlib.AbstractContextManager:
        if torch.is_autocast_enabled("cuda"):
            return torch.autocast("cuda", enabled=False)
        return contextlib.nullcontext()

    def logits_from_features(self, image_features: torch.Tensor) -> torch.Tensor:
        with self.autocast_off():
            img = F.normalize(image_features.float(), dim=-1)
            return self.logit_scale.float().exp() * img @ self.text_features().t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.autocast(x.device):
            feats = self.visual(x)
        return self.logits_from_features(feats)

    @classmethod
    def from_checkpoint(cls, path, config=None, device=None) -> "PoundNet":
        """Load an official Lightning ``.ckpt`` or a poundcam ``.safetensors`` export.

        ``config``: the run's config.yaml; default: a ``config.yaml`` beside the checkpoint,
        else the released settings. Architecture comes from the tensor shapes.
        """
        from .checkpoint import load_poundnet

        return load_poundnet(path, config=config, device=device)
