"""Train a small PoundNet (the project's own modules and prompt code) on the ground-truth data,
and cache it by a hash of every setting that shapes it.

The cache is a poundcam safetensors export (``poundcam.model.export_safetensors``), so the
trained detector loads with ``PoundNet.from_checkpoint`` like any other model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from poundcam.model import PoundNet, PoundNetConfig, export_safetensors
from poundcam.model.checkpoint import model_id

from .data import DataSettings, make_set

CODE_VERSION = 1  # bump when the generator or the training loop changes what a setting means


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    seed: int = 0
    pool: int = 2048  # training images generated once, reused with augmentation
    steps: int = 400
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 0.05
    warmup: int = 30
    eval_images: int = 256  # held-out images for the accuracy check


def detector_config(width: int = 128, layers: int = 4, patch: int = 16, grid: int = 14) -> PoundNetConfig:
    """Small PoundNet: same modules, prompts and text tower as the released one, small widths."""
    return PoundNetConfig(
        vision_width=width,
        vision_layers=layers,
        patch_size=patch,
        grid_size=grid,
        embed_dim=64,
        text_width=64,
        text_layers=1,
        context_length=16,
        n_ctx_vision=4,
        n_ctx_text=4,
        prompt_depth_vision=layers - 1,
        prompt_depth_text=1,
        prompt_num_text=1,
        class_names=("photo", "image"),
    )


def init_weights(model: PoundNet, seed: int) -> PoundNet:
    """CLIP-like initialization of the tensors PoundNet creates as zeros; the open_clip blocks
    keep their own initialization (drawn from the same seed)."""
    torch.manual_seed(seed)
    fresh = PoundNet(model.config)
    model.load_state_dict(fresh.state_dict())
    v, t, pl = model.visual, model.text, model.prompt_learner
    with torch.no_grad():
        w = v.class_embedding.shape[0]
        v.class_embedding.normal_(0, w**-0.5)
        v.positional_embedding.normal_(0, 0.01)
        v.VPT.normal_(0, 0.02)
        v.proj.normal_(0, w**-0.5)
        for block in v.transformer.resblocks[1:]:
            if block.n_prompt:
                block.VPT_shallow.normal_(0, 0.02)
        t.positional_embedding.normal_(0, 0.01)
        t.text_projection.normal_(0, t.text_projection.shape[0] ** -0.5)
        for block in t.transformer.resblocks:
            if block.n_prompt:
                block.VPT_shallow.normal_(0, 0.02)
        pl.ctx_positive.normal_(0, 0.02)
        pl.ctx_negative.normal_(0, 0.02)
        pl.token_prefix.normal_(0, 0.02)
        pl.token_suffix.normal_(0, 0.02)
        model.logit_scale.fill_(math.log(1 / 0.07))
    return model


def settings_key(cfg: PoundNetConfig, data: DataSettings, train: TrainSettings) -> str:
    blob = json.dumps(
        {
            "version": CODE_VERSION,
            "model": json.loads(cfg.to_json()),
            "data": data.key_fields(),
            "train": dataclasses.asdict(train),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _augment(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random 180-degree rotation and transpose: both keep the parity of x + y, so a
    pixel-grid checkerboard keeps its phase."""
    b = images.shape[0]
    r = (torch.rand(b, generator=g) < 0.5).to(images.device)
    t = (torch.rand(b, generator=g) < 0.5).to(images.device)
    images = torch.where(r[:, None, None, None], images.flip(2, 3), images)
    return torch.where(t[:, None, None, None], images.transpose(2, 3), images)


@torch.no_grad()
def accuracy(model: PoundNet, images: torch.Tensor, labels: torch.Tensor, batch: int = 64) -> float:
    from .data import normalize

    model.eval()
    preds = torch.cat(
        [model(normalize(images[i : i + batch])).argmax(1) for i in range(0, len(images), batch)]
    )
    return (preds == labels).float().mean().item()


def train(
    cfg: PoundNetConfig,
    data: DataSettings,
    s: TrainSettings,
    log=print,
    device: str = "cpu",
    eval_every: int = 0,
) -> tuple[PoundNet, dict]:
    from .data import normalize

    t0 = time.perf_counter()
    pool = make_set(s.seed, "train", s.pool, data)
    images_u8 = (pool.images * 255).round().to(torch.uint8).to(device)  # kept as 8-bit images
    labels = pool.labels.to(device)
    del pool
    held = make_set(s.seed, "test", s.eval_images, data)
    t_data = time.perf_counter() - t0
    log(f"generated {s.pool} training and {s.eval_images} held-out images in {t_data:.0f} s")

    model = init_weights(PoundNet(cfg), s.seed).to(device)
    model.autocast_dtype = None
    model.train()
    decay = [
        p
        for n, p in model.named_parameters()
        if p.dim() >= 2 and "VPT" not in n and "positional" not in n and "ctx" not in n
    ]
    no_decay = [p for n, p in model.named_parameters() if not any(p is q for q in decay)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=s.lr,
        betas=(0.9, 0.98),
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda i: min(1.0, (i + 1) / s.warmup) * 0.5 * (1 + math.cos(math.pi * min(i, s.steps) / s.steps)),
    )
    g = torch.Generator().manual_seed(s.seed + 1)
    t1 = time.perf_counter()
    running = []
    for step in range(s.steps):
        idx = torch.randint(0, len(labels), (s.batch_size,), generator=g).to(device)
        x = normalize(_augment(images_u8[idx].float() / 255, g))
        loss = F.cross_entropy(model(x), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        running.append(loss.item())
        if (step + 1) % 50 == 0 or step + 1 == s.steps:
            log(
                f"step {step + 1}/{s.steps} loss {sum(running) / len(running):.4f} "
                f"({time.perf_counter() - t1:.0f} s)"
            )
            running = []
        if eval_every and (step + 1) % eval_every == 0:
            log(
                f"step {step + 1}: held-out accuracy "
                f"{accuracy(model, held.images.to(device), held.labels.to(device)):.4f}"
            )
            model.train()
    t_train = time.perf_counter() - t1
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    model.model_id = model_id(model.state_dict())
    acc = accuracy(model, held.images.to(device), held.labels.to(device))
    log(f"held-out accuracy {acc:.4f} on {s.eval_images} images")
    info = {
        "data_seconds": round(t_data, 1),
        "train_seconds": round(t_train, 1),
        "held_out_accuracy": acc,
        "held_out_images": s.eval_images,
        "threads": torch.get_num_threads(),
    }
    return model, info


def load_or_train(
    cfg: PoundNetConfig, data: DataSettings, s: TrainSettings, cache_dir: Path, log=print
) -> tuple[PoundNet, dict]:
    """The cached detector for these settings, training it first if it is not there."""
    key = settings_key(cfg, data, s)
    path = Path(cache_dir) / f"detector-{key}.safetensors"
    meta_path = path.with_suffix(".json")
    if path.is_file() and meta_path.is_file():
        model = PoundNet.from_checkpoint(path)
        for p in model.parameters():
            p.requires_grad_(False)
        info = json.loads(meta_path.read_text())
        info["cached"] = True
        log(f"loaded cached detector {path.name}")
        return model, info
    model, info = train(cfg, data, s, log=log)
    export_safetensors(model, path)
    info.update(key=key, weights=path.name)
    meta_path.write_text(json.dumps(info, indent=1))
    info["cached"] = False
    return model, info
