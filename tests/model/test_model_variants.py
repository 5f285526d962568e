"""PoundNets of other shapes, written in the official release format and read back:
architecture inferred from the tensors, identical logits, same model id."""

from __future__ import annotations

import pytest
import torch

from poundcam import PoundNet

VARIANTS = {
    "base": {},
    "wide-deep": dict(vision_width=128, vision_layers=6, embed_dim=48, text_width=128, text_layers=3),
    "patch16-grid4": dict(patch_size=16, grid_size=4),
    "prompt-num-2": dict(prompt_num_text=2),
    "prompt-depth-1": dict(prompt_depth_vision=1, prompt_depth_text=1),
    "prompt-depth-all": dict(prompt_depth_vision=4, prompt_depth_text=2),
    "more-ctx": dict(n_ctx_vision=7, n_ctx_text=9),
    "one-class": dict(class_names=("person",)),
    "long-names": dict(
        class_names=("potted_plant", "dining table", "a very long class name here", "tv monitor", "x")
    ),
    "heads-2": dict(
        vision_width=128,
        text_width=128,
        vision_layers=2,
        text_layers=2,
        prompt_depth_vision=2,
        prompt_depth_text=2,
    ),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_official_format_round_trip(name, make_model, official_writer, tmp_path):
    source = make_model(seed=len(name), **VARIANTS[name]).requires_grad_(False)
    path = official_writer.save(source, tmp_path)
    loaded = PoundNet.from_checkpoint(path)
    assert loaded.config == source.config  # every number inferred right, names from config.yaml
    assert loaded.eot_index == source.eot_index
    assert loaded.model_id == source.model_id
    x = torch.randn(
        3, 3, source.config.image_size, source.config.image_size, generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x))


def test_inferred_numbers(make_model, official_writer, tmp_path):
    cfg = dict(
        vision_width=128,
        vision_layers=5,
        patch_size=16,
        grid_size=3,
        embed_dim=40,
        text_width=64,
        text_layers=3,
        n_ctx_vision=6,
        n_ctx_text=5,
        prompt_depth_vision=4,
        prompt_depth_text=3,
        prompt_num_text=2,
        class_names=("a", "b"),
    )
    path = official_writer.save(make_model(**cfg), tmp_path)
    model = PoundNet.from_checkpoint(path)
    got = model.config
    for key, value in cfg.items():
        assert getattr(got, key) == value, key
    assert got.vision_heads == 2 and got.text_heads == 1
    assert len(model.visual.transformer.resblocks) == 5
    shallow = [i for i, b in enumerate(model.visual.transformer.resblocks) if hasattr(b, "VPT_shallow")]
    assert shallow == [1, 2, 3]
    assert model.prompt_learner.token_suffix.shape == (2, 4, 77 - 1 - 5, 64)


def test_without_config_uses_released_class_names(make_model, official_writer, tmp_path):
    from poundcam.model.config import RELEASED_CLASS_NAMES

    source = make_model(class_names=RELEASED_CLASS_NAMES).requires_grad_(False)
    path = official_writer.save(source, tmp_path, config=False)
    loaded = PoundNet.from_checkpoint(path)
    assert loaded.config.class_names == RELEASED_CLASS_NAMES
    assert loaded.model_id == source.model_id


def test_explicit_config_path_wins_over_the_one_beside(make_model, official_writer, tmp_path):
    source = make_model(class_names=("cat", "dog")).requires_grad_(False)
    path = official_writer.save(source, tmp_path / "run", class_names=["x", "y", "z"])
    other = official_writer.config(tmp_path / "other.yaml", source.config)
    loaded = PoundNet.from_checkpoint(path, config=other)
    assert loaded.config.class_names == ("cat", "dog")


def test_class_name_lengths_change_the_eot_index(make_model):
    short = make_model(class_names=("cat", "dog"))
    long = make_model(class_names=("cat", "a very long class name here"))
    assert short.eot_index == 1 + 4 + 1
    assert long.eot_index == 1 + 4 + 6


def test_device_argument(official_dir):
    model = PoundNet.from_checkpoint(official_dir / "last.ckpt", device="cpu")
    assert next(model.parameters()).device.type == "cpu"
