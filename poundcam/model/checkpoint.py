"""PoundNet checkpoints: official Lightning ``.ckpt`` import, poundcam ``.safetensors`` export,
strict validation and the model id.

Official names (after stripping ``model.``) map to poundcam's module names::

    image_encoder.*  -> visual.*
    text_encoder.*   -> text.*
    prompt_learner.* -> prompt_learner.*   logit_scale -> logit_scale
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

import torch

from ..errors import CheckpointError
from .config import PoundNetConfig, RunSettings, read_run_config
from .digest import digest_file
from .poundnet import PoundNet
from .safe_pickle import load_checkpoint_dict

OFFICIAL_PREFIXES = {"image_encoder.": "visual.", "text_encoder.": "text."}
# Present in official checkpoints, unused by the two-class forward.
UNUSED_OFFICIAL_KEYS = re.compile(r"^prompt_learner\.(positive|negative)_token_(prefix|suffix)$")
SAFETENSORS_FORMAT = "poundcam-poundnet-1"


def model_id(state: dict[str, torch.Tensor]) -> str:
    """Digest of the tensors (names, dtypes, shapes, values): the model's stable identity.

    The same weights give the same id whether they came from a .ckpt or a .safetensors file.
    """
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return "pn-" + h.hexdigest()[:16]


def official_to_poundcam(official: dict[str, torch.Tensor], source: Path) -> dict[str, torch.Tensor]:
    """Strip ``model.``, rename the towers, drop the known-unused tensors."""
    out: dict[str, torch.Tensor] = {}
    for key, value in official.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{source}: state_dict entry {key!r} is not a tensor")
        name = key[len("model.") :] if key.startswith("model.") else key
        if UNUSED_OFFICIAL_KEYS.match(name):
            continue
        for old, new in OFFICIAL_PREFIXES.items():
            if name.startswith(old):
                name = new + name[len(old) :]
                break
        out[name] = value
    return out


def official_name(name: str) -> str:
    """A poundcam tensor name as it is spelled in an official Lightning checkpoint."""
    for old, new in OFFICIAL_PREFIXES.items():
        if name.startswith(new):
            name = old + name[len(new) :]
            break
    return "model." + name


def _same_name(name: str) -> str:
    return name


def _shape(state: dict[str, torch.Tensor], key: str, source: Path, name=_same_name) -> torch.Size:
    if key not in state:
        raise CheckpointError(f"{source}: missing tensor {name(key)!r}; cannot infer the architecture")
    return state[key].shape


def _count_blocks(state: dict[str, torch.Tensor], tower: str) -> tuple[int, int]:
    """(number of blocks, prompt depth = 1 + blocks carrying VPT_shallow)."""
    pat = re.compile(rf"^{tower}\.transformer\.resblocks\.(\d+)\.")
    blocks = {int(m.group(1)) for k in state if (m := pat.match(k))}
    prompted = {
        int(k.split(".")[3])
        for k in state
        if k.startswith(f"{tower}.transformer.resblocks.") and k.endswith(".VPT_shallow")
    }
    layers = max(blocks) + 1 if blocks else 0
    return layers, (max(prompted) + 1 if prompted else 1)


def infer_config(
    state: dict[str, torch.Tensor], settings: RunSettings, source: Path, name=_same_name
) -> PoundNetConfig:
    """Architecture from tensor shapes; class names from the run settings.

    ``name`` spells a tensor name as the file does, for error messages (``official_name``)."""
    conv = _shape(state, "visual.conv1.weight", source, name)
    pos = _shape(state, "visual.positional_embedding", source, name)
    grid = round((pos[0] - 1) ** 0.5)
    if grid * grid + 1 != pos[0]:
        raise CheckpointError(
            f"{source}: {name('visual.positional_embedding')} has {pos[0]} rows, not 1 + grid^2"
        )
    ctx = _shape(state, "prompt_learner.ctx_positive", source, name)
    prefix = _shape(state, "prompt_learner.token_prefix", source, name)
    text_pos = _shape(state, "text.positional_embedding", source, name)
    v_layers, v_depth = _count_blocks(state, "visual")
    t_layers, t_depth = _count_blocks(state, "text")
    if not v_layers or not t_layers:
        raise CheckpointError(
            f"{source}: no transformer blocks found for the {'vision' if not v_layers else 'text'} tower"
        )
    n_classes = prefix[0]
    names = settings.class_names
    if names is None:
        from .config import RELEASED_CLASS_NAMES

        names = RELEASED_CLASS_NAMES
    if len(names) != n_classes:
        raise CheckpointError(
            f"{source}: {name('prompt_learner.token_prefix')} holds {n_classes} class names but the config "
            f"lists {len(names)}; give the run's config.yaml"
        )
    cfg = PoundNetConfig(
        vision_width=conv[0],
        vision_layers=v_layers,
        patch_size=conv[-1],
        grid_size=grid,
        embed_dim=_shape(state, "visual.proj", source, name)[1],
        text_width=text_pos[1],
        text_layers=t_layers,
        context_length=text_pos[0],
        n_ctx_vision=_shape(state, "visual.VPT", source, name)[0],
        n_ctx_text=ctx[1],
        prompt_depth_vision=v_depth,
        prompt_depth_text=t_depth,
        prompt_num_text=ctx[0],
        class_names=tuple(names),
    )
    for field in (
        "n_ctx_vision",
        "n_ctx_text",
        "prompt_depth_vision",
        "prompt_depth_text",
        "prompt_num_text",
    ):
        said = getattr(settings, field)
        if said is not None and said != getattr(cfg, field):
            raise CheckpointError(
                f"{source}: the config says {field}={said} but the tensors imply {getattr(cfg, field)}"
            )
    return cfg


def build_from_state(
    state: dict[str, torch.Tensor], cfg: PoundNetConfig, source: Path, name=_same_name
) -> PoundNet:
    """Create the model and load ``state`` strictly: every tensor present, none extra, all shapes right.

    Error messages spell tensor names with ``name`` (as the file does)."""
    with torch.device("meta"):
        model = PoundNet(cfg)
    expected = model.state_dict()
    missing = sorted(map(name, set(expected) - set(state)))
    unexpected = sorted(map(name, set(state) - set(expected)))
    wrong = sorted(
        f"{name(k)} {tuple(state[k].shape)} (expected {tuple(expected[k].shape)})"
        for k in set(expected) & set(state)
        if state[k].shape != expected[k].shape
    )
    problems = []
    if missing:
        problems.append(f"missing tensors: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors: {', '.join(unexpected)}")
    if wrong:
        problems.append(f"mis-shaped tensors: {', '.join(wrong)}")
    if problems:
        raise CheckpointError(f"{source}: not a valid PoundNet checkpoint; " + "; ".join(problems))
    bad = [name(k) for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{source}: tensors with NaN or infinite values: {', '.join(sorted(bad))}")
    model.load_state_dict(
        {k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True, assign=True
    )
    model.text.attn_mask = model.text.causal_mask(cfg.context_length)
    model.model_id = model_id(model.state_dict())
    # An inference model: frozen, so a plain forward neither builds a graph over the weights
    # nor recomputes the cached text features (see PoundNet.text_features).
    model.requires_grad_(False)
    return model.eval()


def _run_settings(path: Path, config: str | Path | None) -> RunSettings:
    if config is not None:
        return read_run_config(config)
    beside = path.parent / "config.yaml"
    return read_run_config(beside) if beside.is_file() else RunSettings()


def read_official(path: Path) -> dict[str, torch.Tensor]:
    ckpt = load_checkpoint_dict(path)
    state = ckpt.get("state_dict")
    if not isinstance(state, dict):
        keys = ", ".join(map(str, list(ckpt)[:10]))
        raise CheckpointError(f"{path}: no 'state_dict' in the checkpoint (top-level keys: {keys})")
    return official_to_poundcam(state, path)


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not iterable
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: corrupt or unreadable safetensors file: {exc}") from None
    if meta.get("format") != SAFETENSORS_FORMAT:
        raise CheckpointError(
            f"{path}: not a poundcam PoundNet export (metadata format "
            f"{meta.get('format')!r}, expected {SAFETENSORS_FORMAT!r})"
        )
    return state, meta


def load_poundnet(path, config=None, device=None) -> PoundNet:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.suffix == ".safetensors":
        state, meta = read_safetensors(path)
        try:
            cfg = PoundNetConfig.from_json(meta["config"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: metadata 'config' missing or invalid: {exc}") from None
        if config is not None:
            settings = read_run_config(config)
            if settings.class_names is not None:
                cfg = dataclasses.replace(cfg, class_names=settings.class_names)
    else:
        state = read_official(path)
        cfg = infer_config(state, _run_settings(path, config), path, official_name)
        return _to(build_from_state(state, cfg, path, official_name), device)
    return _to(build_from_state(state, cfg, path), device)


def _to(model: PoundNet, device) -> PoundNet:
    return model.to(device) if device is not None else model


def export_safetensors(model: PoundNet, out: str | Path, source_digest: str | None = None) -> Path:
    """Write the model's tensors with its config, model id and the source file's digest."""
    from safetensors.torch import save_file

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {
        "format": SAFETENSORS_FORMAT,
        "config": model.config.to_json(),
        "model_id": model.model_id or model_id(state),
    }
    if source_digest:
        meta["source_sha256"] = source_digest
    tmp = out.with_name(out.name + ".partial")
    try:
        save_file(state, str(tmp), metadata=meta)
        # safetensors writes the file owner-only (0600); weights are no secret, and a worker that
        # runs as another user (the image's uid 10001) must read them
        tmp.chmod(0o644)
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failed write leaves nothing behind
        raise
    return out


def convert(ckpt: str | Path, out: str | Path, config: str | Path | None = None) -> Path:
    model = load_poundnet(ckpt, config=config)
    return export_safetensors(model, out, source_digest=digest_file(ckpt))


def describe(model: PoundNet) -> str:
    return json.dumps({"model_id": model.model_id, **json.loads(model.config.to_json())})
