"""Same-shape batching: one tensor operation for many images of one size, in bounded chunks."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch


def map_in_groups(
    items: Sequence[torch.Tensor],
    keys: Sequence[Hashable],
    fn: Callable[[torch.Tensor, Any], torch.Tensor],
    max_values: int,
) -> list[torch.Tensor]:
    """``fn(stack, key)`` over stacks of the items that share a key (the key must imply their
    shape), at most ``max_values`` tensor elements per stack and at least one item; the rows
    of what it returns come back in input order."""
    out: list[Any] = [None] * len(items)
    groups: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    for key, idx in groups.items():
        step = max(1, max_values // max(items[idx[0]].numel(), 1))
        for a in range(0, len(idx), step):
            part = idx[a : a + step]
            for i, row in zip(part, fn(torch.stack([items[i] for i in part]), key), strict=True):
                out[i] = row
    return out
