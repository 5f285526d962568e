"""Every broken checkpoint is refused with a CheckpointError that names the file and the keys;
a checkpoint that would run code is refused before anything runs."""

from __future__ import annotations

import builtins
import os
import shutil
import sys
import types
import zipfile

import pytest
import torch

from poundcam import CheckpointError, PoundNet
from poundcam.model.safe_pickle import load_checkpoint_dict


@pytest.fixture
def source(make_model):
    return make_model(seed=3).requires_grad_(False)


@pytest.fixture
def good(source, official_writer, tmp_path):
    return official_writer.save(source, tmp_path / "good")


def refused(path, *fragments, config=None):
    with pytest.raises(CheckpointError) as info:
        PoundNet.from_checkpoint(path, config=config)
    msg = str(info.value)
    assert str(path) in msg, msg
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"
    return msg


def test_missing_file(tmp_path):
    refused(tmp_path / "nope.ckpt", "not found")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.ckpt"
    p.write_bytes(b"")
    refused(p, "not a PyTorch checkpoint")


def test_truncated_file(good, tmp_path):
    data = good.read_bytes()
    p = tmp_path / "half.ckpt"
    p.write_bytes(data[: len(data) // 2])
    refused(p, "truncated")


def test_damaged_tensor_data(good, tmp_path):
    """Zip directory intact but a tensor record cut short."""
    p = tmp_path / "damaged.ckpt"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(p, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if "/data/" in info.filename and len(data) > 64:
                data = data[: len(data) // 2]
            dst.writestr(info, data)
    refused(p)


def test_text_file_renamed(tmp_path):
    p = tmp_path / "notes.ckpt"
    p.write_text("these are not weights\n")
    refused(p, "not a PyTorch checkpoint")


def test_png_renamed(official_dir, tmp_path):
    p = tmp_path / "image.ckpt"
    shutil.copy(official_dir / "images" / "img0.png", p)
    refused(p, "not a PyTorch checkpoint")


def test_zip_that_is_not_a_torch_archive(tmp_path):
    p = tmp_path / "archive.ckpt"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("readme.txt", "hello")
        z.writestr("data/weights.bin", b"\x00" * 128)
    refused(p)


def test_non_dict_checkpoint(tmp_path):
    p = tmp_path / "list.ckpt"
    torch.save([torch.zeros(3)], p)
    refused(p, "expected a checkpoint dict")


def test_no_state_dict(tmp_path):
    p = tmp_path / "nostate.ckpt"
    torch.save({"epoch": 1, "weights": {"a": torch.zeros(1)}}, p)
    refused(p, "state_dict", "epoch")


class _Payload:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


@pytest.mark.parametrize("how", ["os.system", "builtins.eval", "builtins.exec"])
def test_code_executing_pickle_is_refused_and_nothing_runs(how, source, official_writer, tmp_path):
    marker = tmp_path / "ran"
    if how == "os.system":
        payload = _Payload(os.system, f"touch {marker}")
        name = os.system.__module__ + ".system"  # posix.system
    elif how == "builtins.eval":
        payload = _Payload(builtins.eval, f"open({str(marker)!r}, 'w').close()")
        name = "builtins.eval"
    else:
        payload = _Payload(builtins.exec, f"open({str(marker)!r}, 'w').close()")
        name = "builtins.exec"
    state = official_writer.state(source)
    p = tmp_path / "evil.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": payload}, p)
    assert not marker.exists()
    refused(p, "refusing to load", name)
    assert not marker.exists()
    with pytest.raises(CheckpointError):
        load_checkpoint_dict(p)
    assert not marker.exists()


def test_framework_namespace_objects_are_never_run(source, official_writer, tmp_path):
    """A callable inside an allowed namespace becomes inert data: loading works, nothing runs."""
    marker = tmp_path / "ran"
    mod = types.ModuleType("pytorch_lightning.evil")

    def boom(path):
        open(path, "w").close()

    boom.__module__ = "pytorch_lightning.evil"
    boom.__qualname__ = "boom"
    mod.boom = boom
    parent = types.ModuleType("pytorch_lightning")
    parent.evil = mod
    p = tmp_path / "sneaky.ckpt"
    with pytest.MonkeyPatch.context() as mp:  # the modules exist only while saving
        mp.setitem(sys.modules, "pytorch_lightning", parent)
        mp.setitem(sys.modules, "pytorch_lightning.evil", mod)
        torch.save(
            {"state_dict": official_writer.state(source), "hyper_parameters": _Payload(boom, str(marker))}, p
        )
    official_writer.config(tmp_path / "config.yaml", source.config)
    model = PoundNet.from_checkpoint(p)
    assert model.model_id == source.model_id
    assert not marker.exists()
    ckpt = load_checkpoint_dict(p)
    assert ckpt["hyper_parameters"].pickled_class == "pytorch_lightning.evil.boom"
    assert not marker.exists()


def _save_state(source, official_writer, tmp_path, edit):
    state = official_writer.state(source)
    edit(state)
    return official_writer.save(source, tmp_path / "edited", state=state)


def test_missing_tensor(source, official_writer, tmp_path):
    p = _save_state(
        source,
        official_writer,
        tmp_path,
        lambda s: s.pop("model.image_encoder.transformer.resblocks.1.attn.in_proj_bias"),
    )
    refused(p, "missing", "model.image_encoder.transformer.resblocks.1.attn.in_proj_bias")


def test_missing_tensor_needed_for_inference(source, official_writer, tmp_path):
    p = _save_state(source, official_writer, tmp_path, lambda s: s.pop("model.image_encoder.proj"))
    refused(p, "missing", "model.image_encoder.proj")


def test_missing_prompt_of_a_middle_block(source, official_writer, tmp_path):
    p = _save_state(
        source,
        official_writer,
        tmp_path,
        lambda s: s.pop("model.image_encoder.transformer.resblocks.1.VPT_shallow"),
    )
    refused(p, "missing", "model.image_encoder.transformer.resblocks.1.VPT_shallow")


def test_missing_last_prompt_contradicts_config(source, official_writer, tmp_path):
    depth = source.config.prompt_depth_vision
    p = _save_state(
        source,
        official_writer,
        tmp_path,
        lambda s: s.pop(f"model.image_encoder.transformer.resblocks.{depth - 1}.VPT_shallow"),
    )
    refused(p, "prompt_depth_vision")


def test_unexpected_tensor(source, official_writer, tmp_path):
    def edit(s):
        s["model.image_encoder.extra_head.weight"] = torch.zeros(2, 2)

    p = _save_state(source, official_writer, tmp_path, edit)
    refused(p, "unexpected", "model.image_encoder.extra_head.weight")


def test_mis_shaped_tensor(source, official_writer, tmp_path):
    key = "model.image_encoder.transformer.resblocks.2.mlp.c_fc.weight"

    def edit(s):
        s[key] = torch.zeros(s[key].shape[0], s[key].shape[1] + 1)

    p = _save_state(source, official_writer, tmp_path, edit)
    refused(p, "mis-shaped", key)


def test_non_square_position_table(source, official_writer, tmp_path):
    key = "model.image_encoder.positional_embedding"
    p = _save_state(source, official_writer, tmp_path, lambda s: s.__setitem__(key, s[key][:-1].clone()))
    refused(p, key, "1 + grid^2")


def test_nan_tensor(source, official_writer, tmp_path):
    key = "model.text_encoder.ln_final.weight"

    def edit(s):
        s[key] = s[key].clone()
        s[key][0] = float("nan")

    p = _save_state(source, official_writer, tmp_path, edit)
    refused(p, "NaN", key)


def test_non_tensor_entry(source, official_writer, tmp_path):
    p = _save_state(source, official_writer, tmp_path, lambda s: s.__setitem__("model.logit_scale", 4.6))
    refused(p, "logit_scale", "not a tensor")


def test_class_name_count_disagrees_with_config(source, official_writer, tmp_path):
    p = official_writer.save(source, tmp_path / "names", class_names=["cat", "dog"])
    refused(p, "model.prompt_learner.token_prefix", "3 class names", "lists 2")


def test_default_class_names_disagree_with_tensors(source, official_writer, tmp_path):
    p = official_writer.save(source, tmp_path / "noconfig", config=False)
    refused(p, "token_prefix", "config.yaml")


@pytest.mark.parametrize(
    "field,yaml_key",
    [
        ("n_ctx_vision", "N_CTX_VISION"),
        ("n_ctx_text", "N_CTX_TEXT"),
        ("prompt_depth_vision", "PROMPT_DEPTH_VISION"),
        ("prompt_depth_text", "PROMPT_DEPTH_TEXT"),
        ("prompt_num_text", "PROMPT_NUM_TEXT"),
    ],
)
def test_config_contradicting_shapes(field, yaml_key, source, official_writer, tmp_path):
    wrong = getattr(source.config, field) + 1
    p = official_writer.save(source, tmp_path / field, **{yaml_key: wrong})
    refused(p, field, f"{field}={wrong}")


def test_unreadable_config(source, official_writer, tmp_path):
    p = official_writer.save(source, tmp_path / "badyaml", config=False)
    (p.parent / "config.yaml").write_text("model: [unclosed\n")
    with pytest.raises(CheckpointError, match="config.yaml"):
        PoundNet.from_checkpoint(p)


def test_failed_load_leaves_the_file_untouched(good):
    before = good.read_bytes()
    with pytest.raises(CheckpointError):
        PoundNet.from_checkpoint(good, config=good.parent / "missing.yaml")
    assert good.read_bytes() == before
