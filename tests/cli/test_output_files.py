"""Where the commands that write one file write it: ``convert OUT`` and ``report --out FILE``
take a file, or a folder (existing, or ending with /) to write a named file into; the output is
checked before any work, and a refusal is one line and exit 2 that leaves nothing behind."""

from __future__ import annotations

import pytest

from poundcam import PoundNet
from poundcam.cli import main


def _error(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("poundcam: ")]
    assert len(err) == 1 and err[0].startswith("poundcam: error: "), err
    return err[0]


def test_convert_into_a_folder_writes_the_checkpoints_name_there(
    official_dir, official_model, tmp_path, capsys
):
    """A path ending with / is a folder (made), as is an existing one: the export goes inside,
    named after the checkpoint, never as a file named like the folder."""
    ckpt = str(official_dir / "last.ckpt")
    assert main(["convert", ckpt, f"{tmp_path / 'new'}/"]) == 0
    out = tmp_path / "new" / "last.safetensors"
    assert f"wrote {out}" in capsys.readouterr().out
    assert PoundNet.from_checkpoint(out).model_id == official_model.model_id  # model-info reads it
    (tmp_path / "existing").mkdir()
    assert main(["convert", ckpt, str(tmp_path / "existing")]) == 0
    assert (tmp_path / "existing" / "last.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.rglob("*")) == [
        "existing",
        "last.safetensors",
        "last.safetensors",
        "new",
    ]


def test_convert_keeps_an_existing_file_unless_forced(official_dir, tmp_path, capsys):
    out = tmp_path / "model.safetensors"
    out.write_bytes(b"the export in use")
    # refused before the checkpoint is read: this one does not even exist
    assert main(["convert", str(tmp_path / "absent.ckpt"), str(out)]) == 2
    assert _error(capsys) == f"poundcam: error: {out} exists; --force replaces it"
    assert main(["convert", str(official_dir / "last.ckpt"), f"{tmp_path}/"]) == 0  # a new name there
    capsys.readouterr()
    assert out.read_bytes() == b"the export in use"
    assert main(["convert", str(official_dir / "last.ckpt"), str(out), "--force"]) == 0
    assert PoundNet.from_checkpoint(out).model_id.startswith("pn-")
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize(
    ("out", "says"),
    [
        ("newdir_x", "newdir_x: the export's name must end in .safetensors"),
        ("model.ckpt", "model.ckpt: the export's name must end in .safetensors"),
        ("afile/x.safetensors", "afile/x.safetensors: afile is not a folder"),
        ("taken/", "taken/last.safetensors: is a folder"),
    ],
)
def test_convert_refuses_a_file_it_could_not_read_back_or_write(
    official_dir, tmp_path, monkeypatch, capsys, out, says
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("")
    (tmp_path / "taken" / "last.safetensors").mkdir(parents=True)
    before = sorted(tmp_path.rglob("*"))
    assert main(["convert", str(official_dir / "last.ckpt"), out]) == 2
    assert says in _error(capsys)
    assert sorted(tmp_path.rglob("*")) == before
