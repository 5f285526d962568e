"""``poundcam calibrate`` on the committed quick detector (a small PoundNet trained on planted
up-sampling artifacts, tests/faithfulness/detector-quick.safetensors): on a few planted fakes it
chooses the block the faithfulness benchmark's rule chooses on its selection split, prints the
table and the setting, and writes the setting into a dotenv file without touching its other
lines. Expected failures are one line and a non-zero exit."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.faithfulness.data import DataSettings, make_set
from benchmarks.faithfulness.evaluate import select_layer
from benchmarks.faithfulness.settings import PROFILES
from poundcam.cam.calibration import Calibration, LayerScore
from poundcam.cli import main
from poundcam.commands.calibrate import write_env
from poundcam.model import PoundNet

ROOT = Path(__file__).resolve().parents[2]
DETECTOR = ROOT / "tests" / "faithfulness" / "detector-quick.safetensors"
N_IMAGES = 6


def _save(images: torch.Tensor, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        pixels = (im.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"image{i:02d}.png")
    return folder


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Path:
    """Planted fakes of the selection split, 256 px a side: the official transform resizes the
    shorter side to 256 and crops the centre 224, so at 256 the resize changes nothing and the
    crop (16 px in) keeps the pixel grid's parity: the planted traces reach the model."""
    data = dataclasses.replace(DataSettings(), size=256)
    s = make_set(0, "select", N_IMAGES, data, fake_share=1.0)
    return _save(s.images, tmp_path_factory.mktemp("planted"))


@pytest.fixture
def env(monkeypatch):
    for name in ("POUNDCAM_CAM_LAYER", "POUNDCAM_CAM_METHOD", "POUNDCAM_CAM_TARGET", "POUNDCAM_THRESHOLD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("POUNDCAM_ALLOWED_ROOTS", raising=False)
    monkeypatch.setenv("POUNDCAM_WEIGHTS", str(DETECTOR))
    monkeypatch.setenv("POUNDCAM_DEVICE", "cpu")


@pytest.fixture(scope="module")
def benchmark_choice() -> int:
    """The block the benchmark's rule picks for GradCAM on its own selection split (block 0,
    deletion AUC 0.137 against 0.427 and 0.831: a margin a few images keep)."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
    model = PoundNet.from_checkpoint(DETECTOR)
    for p in model.parameters():
        p.requires_grad_(False)
    layer, _ = select_layer(model, PROFILES["quick"], "gradcam", log=lambda msg: None)
    return layer


def test_chooses_the_benchmark_layer_and_writes_the_setting(planted, env, tmp_path, capsys, benchmark_choice):
    env_file = tmp_path / "poundcam.env"
    env_file.write_text("# worker settings\nPOUNDCAM_BATCH_SIZE=16\nexport POUNDCAM_CAM_LAYER=-1\nOTHER=x\n")
    code = main(["calibrate", str(planted), "--method", "gradcam", "--json", "--write-env", str(env_file)])
    out = capsys.readouterr()
    assert code == 0, out.err
    doc = json.loads(out.out)
    assert doc["chosen"] == benchmark_choice == 0
    assert doc["method"] == "gradcam" and doc["target"] == "contrastive"
    assert doc["images"] == doc["flagged"] == doc["used"] == N_IMAGES
    assert [s["layer"] for s in doc["scores"]] == [0, 1, 2]
    best = min(doc["scores"], key=lambda s: s["deletion_auc"])
    assert best["layer"] == doc["chosen"] and doc["current"] == 2
    assert doc["setting"] == "POUNDCAM_CAM_LAYER=0"
    assert doc["tie"] is False and doc["written_to"] == str(env_file)
    per = {s["layer"]: np.array(s["per_image"]) for s in doc["scores"]}
    gain = doc["gain_over_current"]
    assert gain["deletion_auc"] == pytest.approx(float((per[2] - per[0]).mean()))
    assert gain["standard_error"] == pytest.approx(float((per[2] - per[0]).std(ddof=1) / np.sqrt(N_IMAGES)))
    # the layer was chosen for GradCAM, not the configured HiResCAM: the method is written too
    assert env_file.read_text() == (
        "# worker settings\nPOUNDCAM_BATCH_SIZE=16\nPOUNDCAM_CAM_LAYER=0\nOTHER=x\n"
        "POUNDCAM_CAM_METHOD=gradcam\n"
    )


def test_several_weightings_choose_the_weighting_too(planted, env, tmp_path, capsys):
    """--method gradcam,hirescam scores every (weighting, block) on the same images and chooses
    the lowest deletion AUC of all; the weighting is written beside the layer when it is not
    the configured one, and the gain is over the current setting (HiResCAM, the last block)."""
    env_file = tmp_path / "poundcam.env"
    code = main(
        ["calibrate", str(planted), "--method", "gradcam,hirescam", "--json", "--write-env", str(env_file)]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    doc = json.loads(out.out)
    assert doc["methods"] == ["gradcam", "hirescam"]
    assert [(s["method"], s["layer"]) for s in doc["scores"]] == [
        (m, k) for m in ("gradcam", "hirescam") for k in (0, 1, 2)
    ]
    assert {s["images"] for s in doc["scores"]} == {N_IMAGES}
    best = min(doc["scores"], key=lambda s: s["deletion_auc"])
    assert (doc["method"], doc["chosen"]) == (best["method"], best["layer"])
    assert (doc["current_method"], doc["current"]) == ("hirescam", 2)
    per = {(s["method"], s["layer"]): np.array(s["per_image"]) for s in doc["scores"]}
    diff = per["hirescam", 2] - per[best["method"], best["layer"]]
    assert doc["gain_over_current"]["deletion_auc"] == pytest.approx(float(diff.mean()))
    if not doc["tie"]:
        lines = env_file.read_text().splitlines()
        assert f"POUNDCAM_CAM_LAYER={best['layer']}" in lines
        assert (f"POUNDCAM_CAM_METHOD={best['method']}" in lines) == (best["method"] != "hirescam")

    assert main(["calibrate", str(planted), "--method", "hirescam,gradcam", "--layers", "1,2"]) == 0
    text = capsys.readouterr().out
    rows = [
        r
        for r in map(str.split, text.splitlines())
        if r[:1] in (["gradcam"], ["hirescam"]) and r[1].isdigit()
    ]
    assert [r[:2] for r in rows] == [["hirescam", "1"], ["hirescam", "2"], ["gradcam", "1"], ["gradcam", "2"]]
    assert [r for r in rows if r[:2] == ["hirescam", "2"]][0][-2:] == ["<-", "current"]
    assert "\nPOUNDCAM_CAM_METHOD=" in text and "current setting, hirescam at block 2" in text


def test_an_unknown_weighting_is_refused_before_any_work(planted, env, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["calibrate", str(planted), "--method", "gradcam,shap"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "argument --method: 'gradcam,shap': give one or more of gradcam, hirescam" in err


def test_table_marks_the_choice_and_the_current_layer(planted, env, capsys, monkeypatch):
    monkeypatch.setenv("POUNDCAM_CAM_METHOD", "gradcam")
    code = main(["calibrate", str(planted), "--layers", "1,-1"])
    out = capsys.readouterr().out
    assert code == 0
    rows = {ln.split()[0]: ln for ln in out.splitlines() if ln.strip()[:1].isdigit()}
    assert set(rows) == {"1", "2"}
    assert rows["1"].endswith("<- chosen") and rows["2"].endswith("<- current")
    assert rows["1"].split()[3] == str(N_IMAGES)
    auc = {k: float(v.split()[1]) for k, v in rows.items()}
    assert "\nPOUNDCAM_CAM_LAYER=1\n" in out
    assert (
        f"block 1 beats the current layer, 2 (the default, the last block), by "
        f"{auc['2'] - auc['1']:.3f} deletion AUC ({auc['1']:.3f} vs {auc['2']:.3f}; standard error "
    ) in out
    assert "do not tell the two blocks apart" not in out  # a margin of many standard errors


def test_the_gain_is_paired_over_the_same_images():
    """Calibration.gain: the mean per-image difference and its standard error; a difference
    within twice it is reported as not telling the blocks apart."""
    from poundcam.cam.calibration import Calibration, LayerScore
    from poundcam.commands.calibrate import report

    def score(layer, aucs):
        return LayerScore(layer, float(np.mean(aucs)), 1.0, 0.5, len(aucs), (1.0,), tuple(aucs))

    result = Calibration(
        "hirescam", "contrastive", 0.5, 3, 3, 3, (score(0, [0.1, 0.2, 0.3]), score(1, [0.2, 0.3, 0.4])), 0
    )
    gain, se = result.gain(1)
    assert gain == pytest.approx(0.1) and se == pytest.approx(0.0, abs=1e-12)
    assert result.gain(5) is None
    text = report(result, current=1, num_blocks=2)
    # the standard error is float rounding, and printed as what it is, not as 0.000
    assert f"by 0.100 deletion AUC (0.200 vs 0.300; standard error {se:#.3g} over 3 images)" in text
    assert se < 1e-12 and "e-" in f"{se:#.3g}"
    assert "do not tell" not in text
    noisy = Calibration(
        "hirescam", "contrastive", 0.5, 3, 3, 3, (score(0, [0.1, 0.5, 0.2]), score(1, [0.4, 0.1, 0.35])), 0
    )
    text = report(noisy, current=1, num_blocks=2)
    # a tie keeps the current layer: its row is the one chosen, and its setting the one printed
    assert "do not tell the two blocks apart and the current layer is kept" in text
    assert "beats" not in text and "\nPOUNDCAM_CAM_LAYER=1\n" in text
    rows = {ln.split()[0]: ln for ln in text.splitlines() if ln.strip()[:1].isdigit()}
    assert rows["0"].endswith("<- lowest") and rows["1"].endswith("<- chosen, current")


def test_small_scores_are_printed_with_their_significant_digits():
    """A model whose P(fake) is tiny everywhere scores about 3e-5: three decimals printed 0.000
    for every block and for the gain, while the rule (exact values) chose a block. Below 0.1 the
    table and the verdict show three significant digits, what the rule compared."""
    from poundcam.commands.calibrate import figure, report

    per_image = {
        0: [3.0e-5, 3.2e-5, 2.9e-5, 3.1e-5],
        1: [6.1e-5, 6.3e-5, 6.0e-5, 6.2e-5],
        2: [0.2, 0.4, 0.3, 0.3],
    }
    after = {0: 1e-5, 1: 0.0123, 2: 1.0}  # mean P(fake) after 10% of the cells
    scores = tuple(
        LayerScore(k, float(np.mean(v)), 1.0, after[k], 4, (1.0, 0.0), tuple(v)) for k, v in per_image.items()
    )
    text = report(Calibration("hirescam", "contrastive", 0.5, 4, 4, 4, scores, 0), current=1, num_blocks=3)
    assert "0.000" not in text
    rows = {ln.split()[0]: ln.split() for ln in text.splitlines() if ln.strip()[:1].isdigit()}
    assert [rows[k][1:3] for k in "012"] == [
        ["3.05e-05", "1.00e-05"],
        ["6.15e-05", "0.0123"],
        ["0.300", "1.000"],
    ]
    assert "\nPOUNDCAM_CAM_LAYER=0\n" in text  # the rule itself is unchanged
    assert "block 0 beats the current layer, 1, by 3.10e-05 deletion AUC (3.05e-05 vs 6.15e-05; " in text
    assert [figure(v) for v in (0, 1.0, 0.1, 0.0123, 4.2e-4, float("nan"))] == [
        "0.000",
        "1.000",
        "0.100",
        "0.0123",
        "0.000420",
        "nan",
    ]


def test_write_env_appends_or_replaces_and_keeps_other_lines(tmp_path):
    path = tmp_path / "a.env"
    write_env(path, {"POUNDCAM_CAM_LAYER": "2"})  # created
    assert path.read_text() == "POUNDCAM_CAM_LAYER=2\n"
    path.write_text("A=1\n\n# note\nPOUNDCAM_CAM_LAYER = 5\nB=2")
    write_env(path, {"POUNDCAM_CAM_LAYER": "3", "POUNDCAM_CAM_METHOD": "gradcam"})
    assert path.read_text() == "A=1\n\n# note\nPOUNDCAM_CAM_LAYER=3\nB=2\nPOUNDCAM_CAM_METHOD=gradcam\n"


def _result(per_image: dict[int, list[float]], chosen: int) -> Calibration:
    scores = tuple(
        LayerScore(k, float(np.mean(v)), 1.0, 0.5, len(v), (1.0, 0.0), tuple(v)) for k, v in per_image.items()
    )
    n = len(per_image[chosen])
    return Calibration("hirescam", "contrastive", 0.5, n, n, n, scores, chosen)


def test_write_env_waits_for_images_that_tell_the_blocks_apart():
    """Calibration.is_tie decides whether --write-env writes: not when the gain is within twice its
    standard error, nor when the current layer is the choice."""
    clear = _result({0: [0.2, 0.3, 0.25], 1: [0.8, 0.9, 0.85]}, chosen=0)
    assert not clear.is_tie(1)
    noisy = _result({0: [0.2, 0.9, 0.3], 1: [0.8, 0.3, 0.5]}, chosen=0)  # gain 0.067, s.e. 0.33
    assert noisy.is_tie(1)
    assert not noisy.is_tie(0)  # the current layer is the choice
    assert not noisy.is_tie(5)  # not a candidate


def _error(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("poundcam: error:")]
    assert len(err) == 1
    return err[0]


def test_no_images(env, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["calibrate", str(tmp_path / "empty")]) == 2
    assert "no image files found" in _error(capsys)


def test_unreadable_images(env, tmp_path, capsys):
    (tmp_path / "x.png").write_text("not an image")
    assert main(["calibrate", str(tmp_path / "x.png")]) == 2
    captured = capsys.readouterr()
    assert "skipped (not_an_image)" in captured.err
    assert "none of the 1 file(s) could be read as an image" in captured.err


def test_no_image_labelled_fake(env, tmp_path, capsys):
    real = make_set(0, "select", 2, dataclasses.replace(DataSettings(), size=256), fake_share=0.0)
    folder = _save(real.images, tmp_path / "real")
    assert main(["calibrate", str(folder)]) == 2
    assert "none of the 2 images is labelled fake (P(fake) >= 0.5)" in _error(capsys)


@pytest.mark.parametrize(("layers", "message"), [("a,1", "not a comma-separated list"), ("7", "layer")])
def test_bad_layer_list(planted, env, capsys, layers, message):
    assert main(["calibrate", str(planted), "--layers", layers, "--limit", "1"]) == 2
    assert message in _error(capsys)


def test_the_unmodified_images_are_scored_once_not_once_per_block():
    """The deletion points that remove no cell take P(fake) of the images as given: the curves
    equal those measured with a forward there, one forward fewer per image and block, and the
    progress units add up to the total announced."""
    from poundcam.cam.calibration import FRACTIONS, calibrate, deletion_insertion, fake_probabilities

    model = PoundNet.from_checkpoint(DETECTOR).eval()
    s = make_set(0, "select", 4, DataSettings(), fake_share=1.0)
    x = s.normalized()
    maps = torch.rand(4, *model.patch_grid, generator=torch.Generator().manual_seed(0))
    forwards = []

    def counted(inputs):
        forwards.append(len(inputs))
        return model(inputs)

    measured = deletion_insertion(counted, x, maps, kinds=("deletion",))["deletion"]
    n_measured = sum(forwards)
    forwards.clear()
    given = deletion_insertion(
        counted, x, maps, kinds=("deletion",), unmodified=fake_probabilities(model, x).numpy()
    )["deletion"]
    assert np.allclose(given, measured, atol=1e-5)
    assert n_measured - sum(forwards) == len(x) * sum(1 for f in FRACTIONS if f == 0)

    reports = []
    calibrate(
        model, x, 0.0, layers=[1, 2], method="gradcam", progress=lambda n, total: reports.append((n, total))
    )
    assert sum(n for n, _ in reports) == reports[0][1]
