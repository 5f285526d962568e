"""A small ViT classifier that is not a PoundNet and implements only the explanation entry
points (poundcam.cam.protocol): what ComparativeCAM may rely on, and nothing else."""

from __future__ import annotations

import torch
from torch import nn

from poundcam.model.intermediates import POINTS, BlockActivation, BlockAttention


class ToyBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def attend(self, normed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, c = normed.shape
        d = c // self.heads
        q, k, v = (t.reshape(b, n, self.heads, d).transpose(1, 2) for t in self.qkv(normed).split(c, dim=-1))
        probs = torch.softmax(q @ k.transpose(-1, -2) / d**0.5, dim=-1)
        return self.proj((probs @ v).transpose(1, 2).reshape(b, n, c)), probs

    def finish(self, x: torch.Tensor, normed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, probs = self.attend(normed)
        x = x + out
        return x + self.mlp(self.ln2(x)), probs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.finish(x, self.ln1(x))[0]


class ToyViT(nn.Module):
    """Patch embedding, a CLS token, pre-LN blocks, a linear head on CLS: logits [B, 2]."""

    def __init__(
        self, seed: int = 0, width: int = 32, layers: int = 3, heads: int = 4, patch: int = 8, image: int = 32
    ):
        super().__init__()
        torch.manual_seed(seed)
        self.grid = image // patch
        self.embed = nn.Conv2d(3, width, patch, patch)
        self.cls = nn.Parameter(torch.randn(1, 1, width) * 0.1)
        self.pos = nn.Parameter(torch.randn(1, 1 + self.grid**2, width) * 0.1)
        self.blocks = nn.ModuleList(ToyBlock(width, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, 2)

    # -- the protocol ----------------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def patch_grid(self) -> tuple[int, int]:
        return self.grid, self.grid

    @property
    def patch_tokens(self) -> slice:
        return slice(1, 1 + self.grid**2)

    def block_index(self, layer: int) -> int:
        if not -self.num_blocks <= layer < self.num_blocks:
            raise ValueError(f"layer {layer} out of range")
        return layer % self.num_blocks

    def forward_to(self, x: torch.Tensor, layer: int, point: str = "ln_1") -> BlockActivation:
        assert point in POINTS
        layer = self.block_index(layer)
        h = self.tokens(x)
        for block in self.blocks[:layer]:
            h = block(h)
        if point == "output":
            return BlockActivation(layer, point, self.blocks[layer](h))
        return BlockActivation(layer, point, self.blocks[layer].ln1(h), residual=h)

    def forward_from(self, start: BlockActivation) -> torch.Tensor:
        return self.attention_from(start)[0]

    def attention_from(self, start: BlockActivation) -> tuple[torch.Tensor, list[BlockAttention]]:
        records = []
        if start.point == "ln_1":
            h, probs = self.blocks[start.layer].finish(start.residual, start.activation)
            records.append(BlockAttention(start.layer, probs))
        else:
            h = start.activation
        for i in range(start.layer + 1, self.num_blocks):
            h, probs = self.blocks[i].finish(h, self.blocks[i].ln1(h))
            records.append(BlockAttention(i, probs))
        return self.head(self.norm(h[:, 0])), records

    # -- an ordinary forward, for references --------------------------------------------------
    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        p = self.embed(x).flatten(2).transpose(1, 2)
        return torch.cat([self.cls.expand(len(x), -1, -1), p], dim=1) + self.pos

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.tokens(x)
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h[:, 0]))


__all__ = ["ToyViT"]
