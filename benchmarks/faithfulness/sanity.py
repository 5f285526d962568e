"""Sanity checks after Adebayo et al., "Sanity Checks for Saliency Maps" (NeurIPS 2018).

Cascading randomization: the model's head (ln_post and the projection), then its vision
blocks from the top down, are re-initialized one at a time, cumulatively; at each step every
method's maps are recomputed on the same images and compared with the trained model's maps by
Spearman rank correlation. A map that explains the model must change as the model is
destroyed (correlation towards zero); a map that ignores the model stays at 1.

Class swap: the same method's map for the other class ("real" instead of "fake"). A map that
ignores the class it is asked about is identical for both.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from .methods import compute_maps
from .metrics import spearman


def randomization_steps(model) -> list[str]:
    n = len(model.visual.transformer.resblocks)
    return ["trained", "head"] + [f"block {i}" for i in range(n - 1, -1, -1)]


def _reinit(model, step: str, seed: int) -> None:
    """Re-initialize one part of ``model`` in place (fresh module init, drawn from ``seed``)."""
    torch.manual_seed(seed)
    visual = model.visual
    with torch.no_grad():
        if step == "head":
            visual.ln_post.reset_parameters()
            visual.proj.normal_(0, visual.proj.shape[0] ** -0.5)
            return
        i = int(step.split()[1])
        block = visual.transformer.resblocks[i]
        fresh = type(block)(
            block.attn.embed_dim,
            block.attn.num_heads,
            block.n_prompt,
            block.prompt_at_end,
            block.prompt_offset,
        )
        if block.n_prompt:
            fresh.VPT_shallow.normal_(0, 0.02)
        block.load_state_dict(fresh.state_dict())


def cascading_randomization(model, x, images, ids, methods: dict, seed: int = 0, log=print) -> dict:
    """{method: {"steps": [...], "spearman_mean": [...], "spearman_abs_mean": [...]}}."""
    steps = randomization_steps(model)
    reference = {m: compute_maps(fn, model, x, images, ids) for m, fn in methods.items()}
    work = copy.deepcopy(model)
    out: dict[str, dict[str, list]] = {
        m: {"steps": steps, "spearman_mean": [1.0], "spearman_abs_mean": [1.0]} for m in methods
    }
    for k, step in enumerate(steps[1:], start=1):
        _reinit(work, step, seed + k)
        for m, fn in methods.items():
            rho = spearman(reference[m], compute_maps(fn, work, x, images, ids))
            out[m]["spearman_mean"].append(float(np.mean(rho)))
            out[m]["spearman_abs_mean"].append(float(np.mean(np.abs(rho))))
        log(
            f"randomized {step}: "
            + ", ".join(f"{m[:22]} {out[m]['spearman_mean'][-1]:+.2f}" for m in methods)
        )
    return out


def class_swap(model, x, images, ids, methods: dict) -> dict:
    """{method: {"spearman_mean": ..., "identical_share": ...}} fake map vs real map."""
    out = {}
    for m, fn in methods.items():
        fake = compute_maps(fn, model, x, images, ids, cls=1)
        real = compute_maps(fn, model, x, images, ids, cls=0)
        rho = spearman(fake, real)
        same = (fake - real).flatten(1).abs().amax(dim=1) == 0
        out[m] = {"spearman_mean": float(np.mean(rho)), "identical_share": float(same.float().mean())}
    return out
