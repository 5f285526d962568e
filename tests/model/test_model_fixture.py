"""The official tiny fixture: PoundNet reproduces the authors' logits, and poundcam.preprocess
reproduces the authors' test transform."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from poundcam import PoundNet, preprocess_image as preprocess


@pytest.fixture(scope="module")
def expected(official_dir):
    data = json.loads((official_dir / "expected.json").read_text())
    assert data["class_order"] == ["real", "fake"]
    return data["results"]


@pytest.fixture(scope="module")
def inputs(official_dir):
    return torch.load(official_dir / "inputs.pt", weights_only=True)


def _logits(expected):
    return torch.tensor([r["logits"] for r in expected], dtype=torch.float32)


def test_logits_from_inputs_match_expected(official_model, inputs, expected):
    assert inputs.shape == (len(expected), 3, 224, 224)
    with torch.no_grad():
        logits = official_model(inputs)
    assert logits.shape == (len(expected), 2) and logits.dtype == torch.float32
    torch.testing.assert_close(logits, _logits(expected), rtol=0, atol=1e-4)
    probs = torch.tensor([r["probs"] for r in expected])
    torch.testing.assert_close(logits.softmax(-1), probs, rtol=0, atol=1e-5)


def test_preprocess_equals_official_inputs(official_dir, inputs, expected):
    for i, r in enumerate(expected):
        with Image.open(official_dir / "images" / r["image"]) as img:
            x = preprocess(img)
        assert x.shape == (3, 224, 224) and x.dtype == torch.float32
        torch.testing.assert_close(
            x, inputs[i], rtol=0, atol=1e-5, msg=lambda m, name=r["image"]: f"{name}: {m}"
        )


def test_logits_from_pngs_match_expected(official_dir, official_model, expected):
    batch = []
    for r in expected:
        with Image.open(official_dir / "images" / r["image"]) as img:
            batch.append(preprocess(img))
    with torch.no_grad():
        logits = official_model(torch.stack(batch))
    torch.testing.assert_close(logits, _logits(expected), rtol=0, atol=1e-3)


def test_fixture_images_cover_odd_modes_and_sizes(official_dir, expected):
    modes, sizes = set(), set()
    for r in expected:
        with Image.open(official_dir / "images" / r["image"]) as img:
            modes.add(img.mode)
            sizes.add(img.size)
    assert {"L", "RGBA"} <= modes and any(w != h for w, h in sizes)


def test_loaded_model_is_frozen_and_identified(official_dir, official_model):
    assert not any(p.requires_grad for p in official_model.parameters())
    assert not official_model.training
    again = PoundNet.from_checkpoint(official_dir / "last.ckpt")
    assert official_model.model_id == again.model_id
    assert official_model.model_id.startswith("pn-")
    cfg = official_model.config
    assert (cfg.vision_width, cfg.vision_layers, cfg.patch_size, cfg.grid_size, cfg.embed_dim) == (
        128,
        10,
        32,
        7,
        64,
    )
    assert (cfg.text_width, cfg.text_layers) == (64, 10)
    assert (
        cfg.n_ctx_vision,
        cfg.n_ctx_text,
        cfg.prompt_depth_vision,
        cfg.prompt_depth_text,
        cfg.prompt_num_text,
    ) == (16, 16, 8, 8, 1)
    assert len(cfg.class_names) == 20 and official_model.eot_index == 20


def test_model_layout_is_open_clip(official_model):
    blocks = official_model.visual.transformer.resblocks
    assert len(blocks) == 10 and official_model.visual.grid_size == (7, 7)
    from open_clip.transformer import QuickGELU, ResidualAttentionBlock

    assert all(isinstance(b, ResidualAttentionBlock) for b in blocks)
    assert isinstance(blocks[0].mlp.gelu, QuickGELU)
