"""`poundcam convert`: official .ckpt -> safetensors with config, model id and source digest;
loading the export gives identical logits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from poundcam import CheckpointError, PoundNet
from poundcam.cli import main
from poundcam.model.checkpoint import SAFETENSORS_FORMAT, digest_file
from poundcam.model.config import PoundNetConfig

POUNDCAM_BIN = Path(sys.executable).parent / "poundcam"


def _metadata(path: Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def _assert_same_model(a: PoundNet, b: PoundNet, x: torch.Tensor) -> None:
    assert a.model_id == b.model_id and a.config == b.config
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_convert_official_fixture_in_process(official_dir, official_model, tmp_path, capsys):
    out = tmp_path / "export" / "tiny.safetensors"
    assert main(["convert", str(official_dir / "last.ckpt"), str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    meta = _metadata(out)
    assert meta["format"] == SAFETENSORS_FORMAT
    assert meta["model_id"] == official_model.model_id
    assert meta["source_sha256"] == digest_file(official_dir / "last.ckpt")
    assert PoundNetConfig.from_json(meta["config"]) == official_model.config
    loaded = PoundNet.from_checkpoint(out)
    x = torch.load(official_dir / "inputs.pt", weights_only=True)
    _assert_same_model(loaded, official_model, x)
    assert not any(p.requires_grad for p in loaded.parameters())
    assert not list(out.parent.glob("*.partial"))
    # readable by a worker running as another user (not safetensors' owner-only 0600)
    assert out.stat().st_mode & 0o777 == 0o644


@pytest.mark.slow
def test_convert_variant_with_console_script(make_model, official_writer, tmp_path):
    source = make_model(seed=5, prompt_num_text=2, class_names=("a", "bb cc")).requires_grad_(False)
    ckpt = official_writer.save(source, tmp_path / "run")
    out = tmp_path / "variant.safetensors"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run(
        [str(POUNDCAM_BIN), "convert", str(ckpt), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    meta = _metadata(out)
    assert meta["source_sha256"] == digest_file(ckpt)
    assert json.loads(meta["config"])["class_names"] == ["a", "bb cc"]
    loaded = PoundNet.from_checkpoint(out)
    _assert_same_model(loaded, source, torch.randn(2, 3, 224, 224))


def test_convert_bad_checkpoint_exit_code(tmp_path, capsys):
    bad = tmp_path / "bad.ckpt"
    bad.write_text("nope")
    out = tmp_path / "out.safetensors"
    assert main(["convert", str(bad), str(out)]) == 2
    assert str(bad) in capsys.readouterr().err
    assert not out.exists()


def test_foreign_safetensors_is_refused(tmp_path):
    p = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(p), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="not a poundcam PoundNet export") as info:
        PoundNet.from_checkpoint(p)
    assert str(p) in str(info.value)


def test_corrupt_safetensors_is_refused(official_dir, tmp_path):
    out = tmp_path / "tiny.safetensors"
    main(["convert", str(official_dir / "last.ckpt"), str(out)])
    cut = tmp_path / "cut.safetensors"
    data = out.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.safetensors"):
        PoundNet.from_checkpoint(cut)


def test_safetensors_with_missing_tensor_is_refused(official_dir, tmp_path):
    out = tmp_path / "tiny.safetensors"
    main(["convert", str(official_dir / "last.ckpt"), str(out)])
    meta = _metadata(out)
    with safe_open(str(out), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys() if k != "visual.ln_post.bias"}  # noqa: SIM118 - not iterable
    p = tmp_path / "partial.safetensors"
    save_file(state, str(p), metadata=meta)
    with pytest.raises(CheckpointError, match="visual.ln_post.bias"):
        PoundNet.from_checkpoint(p)


def test_model_id_tracks_the_weights(make_model):
    a, b = make_model(seed=1), make_model(seed=1)
    assert a.model_id == b.model_id
    assert make_model(seed=2).model_id != a.model_id
