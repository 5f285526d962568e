"""Helpers that write PoundNets in the OFFICIAL release format (a Lightning .ckpt plus the run's
config.yaml), so the import path is tested on files built like the released ones."""

from __future__ import annotations

import contextlib
import sys
import types
from pathlib import Path

import pytest
import torch
import yaml

REVERSE_PREFIXES = {"visual.": "image_encoder.", "text.": "text_encoder."}


def official_state_dict(model) -> dict[str, torch.Tensor]:
    """poundcam names -> the official Lightning names (``model.`` prefix, tower renames), plus
    the positive/negative halves of the token embeddings that the official module also stores."""
    out: dict[str, torch.Tensor] = {}
    for name, value in model.state_dict().items():
        for new, old in REVERSE_PREFIXES.items():
            if name.startswith(new):
                name = old + name[len(new) :]
                break
        out["model." + name] = value.detach().clone()
    p = model.config.prompt_num_text
    prefix = out["model.prompt_learner.token_prefix"]
    suffix = out["model.prompt_learner.token_suffix"]
    out["model.prompt_learner.positive_token_prefix"] = prefix[:, :p].clone()
    out["model.prompt_learner.positive_token_suffix"] = suffix[:, :p].clone()
    out["model.prompt_learner.negative_token_prefix"] = prefix[:, p:].clone()
    out["model.prompt_learner.negative_token_suffix"] = suffix[:, p:].clone()
    return out


@contextlib.contextmanager
def fake_training_framework():
    """Classes living in ``lightning.fabric.utilities.data`` and
    ``pytorch_lightning.callbacks.model_checkpoint``, registered only while saving, so the
    pickle references them as a released checkpoint does and the loader cannot import them."""

    class AttributeDict(dict):
        def __getattr__(self, key):
            return self[key]

    class ModelCheckpoint:
        def __init__(self, monitor: str, best: float):
            self.monitor = monitor
            self.best_model_score = best

    names = [
        "lightning",
        "lightning.fabric",
        "lightning.fabric.utilities",
        "lightning.fabric.utilities.data",
        "pytorch_lightning",
        "pytorch_lightning.callbacks",
        "pytorch_lightning.callbacks.model_checkpoint",
    ]
    mods = {n: types.ModuleType(n) for n in names}
    AttributeDict.__module__ = "lightning.fabric.utilities.data"
    AttributeDict.__qualname__ = "AttributeDict"
    ModelCheckpoint.__module__ = "pytorch_lightning.callbacks.model_checkpoint"
    ModelCheckpoint.__qualname__ = "ModelCheckpoint"
    mods["lightning.fabric.utilities.data"].AttributeDict = AttributeDict
    mods["pytorch_lightning.callbacks.model_checkpoint"].ModelCheckpoint = ModelCheckpoint
    with pytest.MonkeyPatch.context() as mp:
        for name, module in mods.items():
            mp.setitem(sys.modules, name, module)
        yield AttributeDict, ModelCheckpoint


def write_run_config(path: Path, cfg, **override) -> Path:
    model = {
        "NAME": "ViT-test",
        "N_CTX_VISION": cfg.n_ctx_vision,
        "N_CTX_TEXT": cfg.n_ctx_text,
        "PROMPT_DEPTH_VISION": cfg.prompt_depth_vision,
        "PROMPT_DEPTH_TEXT": cfg.prompt_depth_text,
        "PROMPT_NUM_TEXT": cfg.prompt_num_text,
        "CTX_INIT": False,
    }
    names = list(override.pop("class_names", cfg.class_names))
    model.update(override)
    data = {"arch": "poundnet", "model": model, "datasets": {"train": {"multicalss_names": names}}}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def save_official(
    model,
    directory: Path,
    state: dict | None = None,
    config: bool = True,
    name: str = "last.ckpt",
    **config_override,
) -> Path:
    """Write ``model`` (or the given official ``state``) as ``directory/last.ckpt`` in the
    official format, with a ``config.yaml`` beside it unless ``config`` is False."""
    directory.mkdir(parents=True, exist_ok=True)
    state = official_state_dict(model) if state is None else state
    with fake_training_framework() as (AttributeDict, ModelCheckpoint):
        hparams = AttributeDict(lr=0.002, arch="poundnet", n_ctx=model.config.n_ctx_vision)
        ckpt = {
            "epoch": 9,
            "global_step": 12345,
            "pytorch-lightning_version": "2.2.4",
            "state_dict": state,
            "hyper_parameters": hparams,
            "callbacks": {"ModelCheckpoint{'monitor': 'val_acc'}": ModelCheckpoint("val_acc", 0.97)},
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.002, "params": [0, 1]}]}],
            "lr_schedulers": [],
        }
        path = directory / name
        torch.save(ckpt, path)
    if config:
        write_run_config(directory / "config.yaml", model.config, **config_override)
    return path


@pytest.fixture
def make_model(tiny_model_factory):
    """``make_model(seed=0, **config_overrides)``: a random tiny PoundNet (tests/conftest.py)."""
    return tiny_model_factory


@pytest.fixture
def official_writer():
    return types.SimpleNamespace(save=save_official, state=official_state_dict, config=write_run_config)


@pytest.fixture(autouse=True)
def _one_cpu_thread():
    """Tiny models run fastest on one thread; on a busy machine several OpenMP threads spin
    against each other (50x slower here). Restored after each test."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
