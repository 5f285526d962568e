"""Which files ``poundcam analyze`` reads: one rule for files and folders (the real path, links
followed, must lie under an allowed root: the local store's own check), the roots from
POUNDCAM_ALLOWED_ROOTS or, unset, the paths given; every other path skipped with its code and
reason, never a traceback."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from benchmarks.local_servers import poundcam_cmd
from poundcam.commands.inputs import collect, default_roots
from poundcam.settings import Settings
from poundcam.storage import LocalStore


@pytest.fixture
def tree(tmp_path) -> Path:
    """allowed/ holds an image, a folder, and links to a file and a folder both inside and
    outside it; outside/ holds the targets of the outside links."""
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    (allowed / "sub").mkdir(parents=True)
    (outside / "d").mkdir(parents=True)
    for path in (allowed / "a.jpg", allowed / "sub" / "in.jpg", outside / "o.jpg", outside / "d" / "od.png"):
        path.write_bytes(b"bytes of " + path.name.encode())
    (allowed / "notes.txt").write_text("not an image name")
    (allowed / "link-out.jpg").symlink_to(outside / "o.jpg")
    (allowed / "dir-out").symlink_to(outside / "d")
    (allowed / "link-in.jpg").symlink_to(allowed / "sub" / "in.jpg")
    (allowed / "dir-in").symlink_to(allowed / "sub")
    return tmp_path


def store(tree: Path, *roots: Path) -> LocalStore:
    return LocalStore(tree / "heatmaps", read_roots=roots)


def roots_of(tree: Path, paths: list[str]) -> tuple[str, ...]:
    return default_roots(paths, Settings.from_env({}, local_root=str(tree / "heatmaps")))


def skipped(inputs) -> dict[str, tuple[str, str]]:
    return {Path(k.path).name: (k.code, k.reason) for k in inputs.skipped}


def test_links_pointing_outside_are_skipped_alike_and_inside_followed_alike(tree):
    allowed = tree / "allowed"
    (allowed / "sub" / "up").symlink_to(allowed)  # a loop
    inputs = collect([str(allowed)], store(tree, allowed))
    # link-in.jpg and dir-in lead to sub/in.jpg, listed once; the loop is walked once
    assert inputs.files == [str(allowed / "a.jpg"), str(allowed / "sub" / "in.jpg")]
    out = skipped(inputs)
    assert set(out) == {"link-out.jpg", "dir-out"}
    for name, target in (("link-out.jpg", tree / "outside" / "o.jpg"), ("dir-out", tree / "outside" / "d")):
        code, reason = out[name]
        assert code == "uri_not_allowed"
        assert name in reason and str(target) in reason and "outside the allowed roots" in reason


@pytest.mark.parametrize(
    "name, inside", [("link-out.jpg", False), ("dir-out", False), ("link-in.jpg", True), ("dir-in", True)]
)
def test_a_link_named_on_the_command_line_follows_the_same_rule(tree, name, inside):
    allowed = tree / "allowed"
    inputs = collect([str(allowed / name)], store(tree, allowed))
    if inside:
        assert inputs.files == [str(allowed / "sub" / "in.jpg")] and inputs.skipped == []
    else:
        assert inputs.files == [] and skipped(inputs)[name][0] == "uri_not_allowed"


def test_a_path_outside_the_allowed_roots_is_skipped_with_its_reason(tree):
    allowed, outside = tree / "allowed", tree / "outside"
    inputs = collect([str(outside / "o.jpg"), str(outside), str(allowed / "a.jpg")], store(tree, allowed))
    assert inputs.files == [str(allowed / "a.jpg")]
    assert [(k.path, k.code) for k in inputs.skipped] == [
        (str(outside / "o.jpg"), "uri_not_allowed"),
        (str(outside), "uri_not_allowed"),
    ]
    assert all(k.path in k.reason and "outside the allowed roots" in k.reason for k in inputs.skipped)
    assert inputs.skipped[0].as_dict() == {
        "path": str(outside / "o.jpg"),
        "code": "uri_not_allowed",
        "reason": inputs.skipped[0].reason,
    }


def test_unset_roots_are_the_paths_given_files_and_folders_alike(tree):
    allowed = tree / "allowed"
    named = [str(allowed / "link-out.jpg"), str(allowed / "dir-out")]
    roots = roots_of(tree, named)
    assert roots == (str(tree / "outside" / "o.jpg"), str(tree / "outside" / "d"))
    inputs = collect(named, store(tree, *roots))  # named on the command line: both read
    assert inputs.files == [str(tree / "outside" / "o.jpg"), str(tree / "outside" / "d" / "od.png")]
    assert inputs.skipped == []
    # a folder given: links found inside it that point elsewhere are refused, both kinds
    inputs = collect([str(allowed)], store(tree, *roots_of(tree, [str(allowed)])))
    assert set(skipped(inputs)) == {"link-out.jpg", "dir-out"}


def test_malformed_and_missing_paths(tree):
    allowed = tree / "allowed"
    bad = str(allowed / "a\nb.jpg")
    missing = str(allowed / "missing.jpg")
    inputs = collect([bad, missing], store(tree, allowed))
    assert [(k.path, k.code) for k in inputs.skipped] == [(bad, "invalid_uri")]
    assert inputs.files == [missing]  # named on the command line: it fails as an item
    assert roots_of(tree, [bad]) == ()


def test_relative_paths_and_file_uris(tree, monkeypatch):
    monkeypatch.chdir(tree)
    allowed = tree / "allowed"
    inputs = collect(
        ["allowed/dir-in", allowed.as_uri(), "allowed/../outside/o.jpg"], store(tree, Path("allowed"))
    )
    assert inputs.files == [str(allowed / "sub" / "in.jpg"), str(allowed / "a.jpg")]
    assert set(skipped(inputs)) == {"link-out.jpg", "dir-out", "o.jpg"}


def run_analyze(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("POUNDCAM_", "HF_"))}
    return subprocess.run(
        poundcam_cmd() + ["analyze", *args],
        cwd=cwd,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_says_what_it_skipped_and_stops_before_loading_anything(tree):
    before = sorted(p.name for p in tree.iterdir())
    proc = run_analyze(
        "outside/o.jpg",
        "allowed/link-out.jpg",
        "allowed/dir-out",
        "--json",
        cwd=tree,
        POUNDCAM_ALLOWED_ROOTS=str(tree / "allowed"),
        POUNDCAM_WEIGHTS=str(tree / "no-weights.ckpt"),
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    lines = proc.stderr.splitlines()
    for name in ("'outside/o.jpg'", "'allowed/link-out.jpg'", "'allowed/dir-out'"):
        assert (
            sum(ln.startswith("poundcam analyze: skipped (uri_not_allowed) " + name) for ln in lines) == 1
        ), proc.stderr
    assert f"poundcam analyze: allowed roots: {tree / 'allowed'} (POUNDCAM_ALLOWED_ROOTS)" in lines
    assert lines[-1] == "poundcam: error: no image files found in the paths given"
    assert len(lines) == 5
    assert sorted(p.name for p in tree.iterdir()) == before  # no database, no heatmap folder


def test_cli_lists_the_first_skipped_and_counts_the_rest(tree):
    many = [f"outside/nope-{i}.jpg" for i in range(25)]
    proc = run_analyze(*many, cwd=tree, POUNDCAM_ALLOWED_ROOTS=str(tree / "allowed"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert sum(ln.startswith("poundcam analyze: skipped (uri_not_allowed)") for ln in lines) == 20
    assert "poundcam analyze: ... and 5 more skipped (--json lists them all)" in lines
    # unset, the paths given are the roots: the same files are simply missing, no skip
    proc = run_analyze("outside/nope.jpg", cwd=tree, POUNDCAM_WEIGHTS=str(tree / "no-weights.ckpt"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.splitlines()  # nothing exists: it stops before the weights
    assert line.startswith("poundcam: error: nothing to analyse: ") and line.endswith("nope.jpg' not found")


def test_the_output_folder_is_not_walked_into_unless_named(tree):
    """A second run over a folder that holds the first run's output does not analyse the
    heatmaps written there; named on the command line, the folder is read as any other."""
    allowed = tree / "allowed"
    out = allowed / "poundcam-out"
    out.mkdir()
    (out / "heatmap.png").write_bytes(b"a heatmap")
    walked = collect([str(allowed)], store(tree, allowed), outputs=[out])
    assert not [f for f in walked.files if "poundcam-out" in f]
    assert str((allowed / "a.jpg").resolve()) in walked.files
    named = collect([str(out)], store(tree, allowed), outputs=[out])
    assert named.files == [str((out / "heatmap.png").resolve())]


def test_paths_that_do_not_exist_stop_before_the_weights(tree):
    before = sorted(p.name for p in tree.iterdir())
    proc = run_analyze("nope/", "missing.jpg", cwd=tree, POUNDCAM_WEIGHTS=str(tree / "no-weights.ckpt"))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("poundcam: error: nothing to analyse: ")
    assert "not found" in proc.stderr and "weights" not in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tree.iterdir()) == before


def test_files_without_an_image_extension_are_counted_not_skipped(tree, capsys):
    """A walked folder's files whose names lack an image suffix are not read, by design: not
    skipped (no exit 1 for a folder's notes), but listed and counted in one line on stderr, so
    that a reviewer sees what a folder held beyond what was read. Named, a file is read."""
    allowed = tree / "allowed"
    (allowed / "sub" / "noext").write_bytes(b"maybe an image")
    (allowed / "poundcam-out").mkdir()
    (allowed / "poundcam-out" / "log.txt").write_text("the output folder is not walked")
    inputs = collect([str(allowed)], store(tree, allowed), outputs=[allowed / "poundcam-out"])
    # sub/ is walked, and its files counted, once: first found through dir-in (names in order)
    assert inputs.other_files == [str(allowed / "dir-in" / "noext"), str(allowed / "notes.txt")]
    assert inputs.skipped and all(k.path not in inputs.other_files for k in inputs.skipped)
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (
        "poundcam analyze: 2 file(s) in the folders not read, their names lacking an image extension "
        f"(.bmp .gif .jpeg .jpg .png .tif .tiff .webp): {str(allowed / 'dir-in' / 'noext')!r}, "
        f"{str(allowed / 'notes.txt')!r}; name a file on the command line to read it whatever its name"
    )
    named = collect([str(allowed / "sub" / "noext")], store(tree, allowed), command=None)
    assert named.files == [str(allowed / "sub" / "noext")] and named.other_files == []
    for i in range(4):
        (allowed / "sub" / f"more-{i}").write_text("")
    collect([str(allowed / "sub")], store(tree, allowed), command="calibrate")
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("poundcam calibrate: 5 file(s) ") and "'more-2' and 2 more; name" in line.replace(
        str(allowed / "sub") + "/", ""
    )


def test_cli_counts_the_files_it_did_not_read_even_when_none_is_left(tree):
    (tree / "misc").mkdir()
    (tree / "misc" / "noext").write_bytes(b"maybe an image")
    proc = run_analyze("misc/", cwd=tree, POUNDCAM_WEIGHTS=str(tree / "no-weights.ckpt"))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        "poundcam analyze: 1 file(s) in the folders not read, their names lacking an image extension "
        "(.bmp .gif .jpeg .jpg .png .tif .tiff .webp): 'misc/noext'; name a file on the command line "
        "to read it whatever its name",
        "poundcam: error: no image files found in the paths given",
    ]
