"""PoundNet as plain nn.Modules on open_clip's transformer blocks.

Layout and names follow open_clip (``model.visual.transformer.resblocks``) so that tools which
hook layers find them. The released model's prompt tokens ride on the blocks themselves
(``VPT_shallow``), as in the official checkpoint.
"""

from __future__ import annotations

import contextlib
import os
from functools import cache, lru_cache
from typing import cast

import torch
import torch.nn.functional as F
from open_clip.transformer import LayerNorm, QuickGELU, ResidualAttentionBlock
from torch import nn

from ..constants import LABELS
from .config import PoundNetConfig
from .intermediates import POINTS, BlockActivation, BlockAttention


def fp16_round(t: torch.Tensor) -> torch.Tensor:
    """The official code casts prompt tensors to fp16 before joining fp32 activations."""
    return t.to(torch.float16).to(t.dtype)


class PromptedBlock(ResidualAttentionBlock):
    """open_clip's pre-LN residual block (QuickGELU) that may own a deep prompt.

    With ``n_prompt > 0`` the block owns ``VPT_shallow`` [n_prompt, width]; before the block
    runs, the prompt tokens of the sequence (``prompt_slice``) are replaced by it.
    """

    def __init__(
        self, width: int, heads: int, n_prompt: int = 0, prompt_at_end: bool = True, prompt_offset: int = 1
    ):
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
        return torch.cat([x[:, :start], prompt, x[:, start + self.n_prompt :]], dim=1)

    def forward_attention(
        self, x: torch.Tensor, normed: torch.Tensor, attn_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Finish the block from its ``ln_1`` activation ``normed`` (an explanation starts here)."""
        x = x + self.ls_1(self.attention(q_x=normed, attn_mask=attn_mask))
        return x + self.ls_2(self.mlp(self.ln_2(x)))

    def forward_cls(self, x: torch.Tensor, normed: torch.Tensor) -> torch.Tensor:
        """The block's output for token 0 only, from its ``ln_1`` activation: the CLS query
        attends to every token. After the last block nothing but CLS reaches the head, so
        this gives the same features for 1/L of the block's token work."""
        cls = x[:, :1] + self.ls_1(self.attention(q_x=normed[:, :1], k_x=normed, v_x=normed))
        return cls + self.ls_2(self.mlp(self.ln_2(cls)))

    def attention_probs(self, q_x: torch.Tensor, kv_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The block's multi-head attention written out (the fused kernel does not return its
        probabilities): (output [B, queries, width], probabilities [B, heads, queries, tokens]).
        Same weights and arithmetic as ``self.attention`` up to float rounding."""
        attn = self.attn
        b, nq, c = q_x.shape
        h = attn.num_heads
        d = c // h
        w_q, w_kv = attn.in_proj_weight.split([c, 2 * c])
        b_q, b_kv = attn.in_proj_bias.split([c, 2 * c])
        q = F.linear(q_x, w_q, b_q).reshape(b, nq, h, d).transpose(1, 2)
        k, v = (t.reshape(b, -1, h, d).transpose(1, 2) for t in F.linear(kv_x, w_kv, b_kv).split(c, dim=-1))
        probs = torch.softmax((q * d**-0.5) @ k.transpose(-1, -2), dim=-1)
        out = (probs.to(v.dtype) @ v).transpose(1, 2).reshape(b, nq, c)
        return attn.out_proj(out), probs

    def forward_attending(
        self, x: torch.Tensor, normed: torch.Tensor, cls_only: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward_attention`` (or ``forward_cls`` with ``cls_only``) that also returns the
        attention probabilities, in the graph."""
        q_x, x = (normed[:, :1], x[:, :1]) if cls_only else (normed, x)
        out, probs = self.attention_probs(q_x, normed)
        x = x + self.ls_1(out)
        return x + self.ls_2(self.mlp(self.ln_2(x))), probs

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.insert_prompt(x)
        return self.forward_attention(x, self.ln_1(x), attn_mask)


class PromptedTransformer(nn.Module):
    def __init__(
        self, width: int, layers: int, heads: int, n_prompt: int, prompt_depth: int, prompt_at_end: bool
    ):
        super().__init__()
        self.width = width
        self.resblocks = nn.ModuleList(
            PromptedBlock(width, heads, n_prompt if 1 <= i < prompt_depth else 0, prompt_at_end)
            for i in range(layers)
        )

    @property
    def blocks(self) -> list[PromptedBlock]:
        """The blocks in order (``resblocks`` types its items as plain Modules)."""
        return cast("list[PromptedBlock]", list(self.resblocks))

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
        self.positional_embedding = nn.Parameter(torch.zeros(cfg.grid_size**2 + 1, width))
        self.VPT = nn.Parameter(torch.zeros(cfg.n_ctx_vision, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = PromptedTransformer(
            width,
            cfg.vision_layers,
            cfg.vision_heads,
            cfg.n_ctx_vision,
            cfg.prompt_depth_vision,
            prompt_at_end=True,
        )
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
        *blocks, last = self.transformer.blocks
        x = self.embed(x)
        for block in blocks:
            x = block(x)
        x = last.insert_prompt(x)
        return self.head(last.forward_cls(x, last.ln_1(x)))

    # -- explaining a block: see PoundNet.forward_to / forward_from / attention_from ----------
    def forward_to(self, x: torch.Tensor, layer: int, point: str) -> BlockActivation:
        blocks = self.transformer.blocks
        h = self.embed(x)
        for block in blocks[:layer]:
            h = block(h)
        block = blocks[layer]
        if point == "output":
            return BlockActivation(layer, point, block(h))
        h = block.insert_prompt(h)
        return BlockActivation(layer, point, block.ln_1(h), residual=h)

    def forward_from(self, start: BlockActivation) -> torch.Tensor:
        """Image features from ``start``. After the last attention only CLS reaches the head,
        so the last block computes the CLS token only."""
        blocks = self.transformer.blocks
        last = len(blocks) - 1
        out = start.activation
        if start.point == "ln_1":
            block = blocks[start.layer]
            finish = block.forward_cls if start.layer == last else block.forward_attention
            out = finish(_residual(start), start.activation)
        for i in range(start.layer + 1, len(blocks)):
            block = blocks[i]
            if i == last:
                out = block.insert_prompt(out)
                out = block.forward_cls(out, block.ln_1(out))
            else:
                out = block(out)
        return self.head(out)

    def attention_from(self, start: BlockActivation) -> tuple[torch.Tensor, list[BlockAttention]]:
        """``forward_from`` with every block's attention written out: (image features, the
        attention of each block from ``start`` on, in order)."""
        blocks = self.transformer.blocks
        last = len(blocks) - 1
        out, first = start.activation, start.layer + 1
        records = []
        if start.point == "ln_1":
            first = start.layer
        for i in range(first, len(blocks)):
            block = blocks[i]
            if i == start.layer:  # its prompt is inserted and its ln_1 taken already
                out, normed = _residual(start), start.activation
            else:
                out = block.insert_prompt(out)
                normed = block.ln_1(out)
            out, probs = block.forward_attending(out, normed, cls_only=i == last)
            records.append(BlockAttention(i, probs))
        return self.head(out), records


def _residual(start: BlockActivation) -> torch.Tensor:
    """The residual stream an ``ln_1`` activation carries (``forward_to`` always sets it)."""
    if start.residual is None:
        raise ValueError(f"an {start.point!r} activation of block {start.layer} without its residual")
    return start.residual


class PromptedTextEncoder(nn.Module):
    """CLIP text transformer fed with prompt embeddings (no token table needed)."""

    def __init__(self, cfg: PoundNetConfig):
        super().__init__()
        self.context_length = cfg.context_length
        self.positional_embedding = nn.Parameter(torch.zeros(cfg.context_length, cfg.text_width))
        self.transformer = PromptedTransformer(
            cfg.text_width,
            cfg.text_layers,
            cfg.text_heads,
            cfg.n_ctx_text,
            cfg.prompt_depth_text,
            prompt_at_end=False,
        )
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

    token_prefix: torch.Tensor  # buffers, registered in __init__
    token_suffix: torch.Tensor

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


@cache
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
    (column 0 = real, column 1 = fake).

    Besides ``forward``, it exposes the entry points an explainer needs (``forward_to``,
    ``forward_from``, ``attention_from``, ``num_blocks``, ``patch_grid``, ``patch_tokens``),
    so that nothing outside the model depends on its blocks.

    Args:
        cfg: The architecture; default: the released ViT-L/14 configuration. Usually built by
            ``PoundNet.from_checkpoint``, which reads it from the checkpoint's shapes.
    """

    CLASSES = LABELS

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
        """The normalized text features of the two prompts.

        Cached; the cache key holds every text tensor's version counter and storage, so an
        optimizer step or a load_state_dict invalidates it. While the prompts are being
        trained (grad enabled and required) they are recomputed so gradients flow.

        Returns:
            [2, E] fp32, rows ordered [real, fake].
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
        """bf16 autocast on CUDA (LayerNorm and logits stay fp32); nothing on CPU.

        Args:
            device: Where the batch is.

        Returns:
            A context manager (``self.autocast_dtype = None`` turns autocast off).
        """
        if device.type == "cuda" and self.autocast_dtype is not None:
            return torch.autocast("cuda", dtype=self.autocast_dtype)
        return contextlib.nullcontext()

    @staticmethod
    def autocast_off() -> contextlib.AbstractContextManager:
        """Turns an enclosing CUDA autocast off (the text side and the logits stay fp32).

        Returns:
            A context manager; it does nothing when no CUDA autocast is on.
        """
        if torch.is_autocast_enabled("cuda"):
            return torch.autocast("cuda", enabled=False)
        return contextlib.nullcontext()

    def logits_from_features(self, image_features: torch.Tensor) -> torch.Tensor:
        """CLIP's scaled cosine similarity of image features with the two prompts.

        Args:
            image_features: [B, E], any float dtype.

        Returns:
            Logits [B, 2] fp32 (column 0 real, 1 fake), computed with autocast off.
        """
        with self.autocast_off():
            img = F.normalize(image_features.float(), dim=-1)
            return self.logit_scale.float().exp() * img @ self.text_features().t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch (bf16 autocast on CUDA, fp32 on the CPU).

        Args:
            x: Images preprocessed by the official transform, [B, 3, H, W].

        Returns:
            Logits [B, 2] fp32: column 0 real, column 1 fake; P(fake) = softmax(logits)[:, 1].
        """
        with self.autocast(x.device):
            feats = self.visual(x)
        return self.logits_from_features(feats)

    # -- public entry points for explaining a block ------------------------------------------
    @property
    def num_blocks(self) -> int:
        """Number of vision blocks."""
        return len(self.visual.transformer.resblocks)

    @property
    def patch_grid(self) -> tuple[int, int]:
        """(rows, columns) of the patch grid; the patch tokens are in row-major order."""
        return self.visual.grid_size

    @property
    def patch_tokens(self) -> slice:
        """Sequence positions of the patch tokens: 0 is CLS, the visual prompts come last."""
        return self.visual.patch_token_slice()

    def block_index(self, layer: int) -> int:
        """``layer`` as a non-negative block index (negative counts from the end).

        Args:
            layer: A vision block index, ``-num_blocks <= layer < num_blocks``.

        Returns:
            The index in ``0 .. num_blocks - 1``.

        Raises:
            ValueError: If ``layer`` is out of range.
        """
        n = self.num_blocks
        if not -n <= layer < n:
            raise ValueError(f"layer {layer} out of range for a ViT with {n} blocks")
        return layer % n

    def forward_to(self, x: torch.Tensor, layer: int, point: str = "ln_1") -> BlockActivation:
        """Run the vision tower up to ``point`` of block ``layer`` and stop there.

        Autograd is left as the caller has it: an explainer runs this under
        ``torch.no_grad()`` and starts its graph at the returned activation. Under CUDA the
        blocks run in bf16 autocast, as in ``forward``.

        Args:
            x: Normalized images [B, 3, H, W].
            layer: Vision block index (negative counts from the end).
            point: ``"ln_1"`` (the block's normalized input, before its attention) or
                ``"output"`` (the block's output, all tokens).

        Returns:
            The BlockActivation at that point, with the residual stream the rest needs.

        Raises:
            ValueError: If ``layer`` or ``point`` is invalid.
        """
        if point not in POINTS:
            raise ValueError(f"point must be one of {POINTS}, not {point!r}")
        layer = self.block_index(layer)
        with self.autocast(x.device):
            return self.visual.forward_to(x, layer, point)

    def forward_from(self, start: BlockActivation) -> torch.Tensor:
        """Finish the forward from a BlockActivation: logits [B, 2] (column 0 real, 1 fake).

        ``model.forward_from(model.forward_to(x, l, p))`` equals ``model(x)`` up to float
        rounding. Gradients flow back to ``start.activation`` (not to ``start.residual``).

        Args:
            start: What ``forward_to`` returned, possibly ``with_activation(leaf)``.

        Returns:
            The logits, fp32.
        """
        with self.autocast(start.activation.device):
            feats = self.visual.forward_from(start)
        return self.logits_from_features(feats)

    def attention_from(self, start: BlockActivation) -> tuple[torch.Tensor, list[BlockAttention]]:
        """``forward_from`` that also returns each block's attention probabilities, in the graph.

        The attention is computed unfused (the probabilities are materialized), which costs
        memory [B, heads, tokens, tokens] per block; the logits equal ``forward_from``'s up to
        float rounding.

        Args:
            start: What ``forward_to`` returned. Blocks from ``start.layer`` on are recorded
                for ``point="ln_1"``, from ``start.layer + 1`` on for ``"output"``.

        Returns:
            (logits [B, 2], list of BlockAttention in block order).
        """
        with self.autocast(start.activation.device):
            feats, attentions = self.visual.attention_from(start)
        return self.logits_from_features(feats), attentions

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str],
        config: str | os.PathLike[str] | None = None,
        device: str | torch.device | None = None,
    ) -> PoundNet:
        """Load an official Lightning ``.ckpt`` or a poundcam ``.safetensors`` export.

        Args:
            path: The checkpoint file. A ``.ckpt`` is read with ``weights_only=True``.
            config: The run's config.yaml (path); default: a ``config.yaml`` beside the
                checkpoint, else the released settings. The architecture itself comes from
                the tensor shapes.
            device: Where to put the model; default the CPU.

        Returns:
            The model in eval mode, its ``model_id`` set to the digest of its tensors.

        Raises:
            CheckpointError: If the file cannot be read safely or does not hold a PoundNet.
        """
        from .checkpoint import load_poundnet

        return load_poundnet(path, config=config, device=device)
