"""Fast version of the faithfulness evaluation (benchmarks/faithfulness, docs/faithfulness.md).

A small PoundNet trained on planted up-sampling artifacts (committed as detector-quick.safetensors,
made by ``python -m benchmarks.faithfulness --quick --export tests/faithfulness/detector-quick.safetensors``)
must keep localizing them with ComparativeCAM at the levels recorded in thresholds.json, its
maps must change when the model is randomized, and the model-free priors must not.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.faithfulness.data import make_set
from benchmarks.faithfulness.methods import BASELINES, comparative_cam, compute_maps
from benchmarks.faithfulness.metrics import auroc, grid_labels, pointing_game
from benchmarks.faithfulness.sanity import cascading_randomization
from benchmarks.faithfulness.settings import PROFILES
from benchmarks.faithfulness.train import accuracy, settings_key
from poundcam.model import PoundNet

HERE = Path(__file__).parent
LIMITS = json.loads((HERE / "thresholds.json").read_text())
PROFILE = PROFILES["quick"]
REGENERATE = ("python -m benchmarks.faithfulness --quick --export "
              "tests/faithfulness/detector-quick.safetensors, then update thresholds.json")


@pytest.fixture(scope="module")
def detector():
    key = settings_key(PROFILE.model, PROFILE.data, PROFILE.train)
    assert key == LIMITS["settings_key"], (
        f"the quick profile's settings changed (key {key}); the committed detector no longer "
        f"matches them. Regenerate: {REGENERATE}")
    model = PoundNet.from_checkpoint(HERE / "detector-quick.safetensors")
    assert model.config == PROFILE.model
    return model


@pytest.fixture(scope="module")
def fakes():
    s = make_set(PROFILE.seed, "localize", LIMITS["n_fakes"], PROFILE.data, fake_share=1.0)
    return s, grid_labels(s.masks, PROFILE.model.grid_size)


def test_detector_separates_the_planted_artifacts(detector):
    held = make_set(PROFILE.seed, "test", LIMITS["n_accuracy"], PROFILE.data)
    assert accuracy(detector, held.images, held.labels) >= LIMITS["accuracy_min"]


@pytest.mark.parametrize("target", ["contrastive", "logit"])
def test_comparative_cam_localizes_planted_artifacts(detector, fakes, target):
    s, labels = fakes
    maps = compute_maps(comparative_cam(target, LIMITS["layer"]), detector, s.normalized(),
                        s.images, list(range(len(s.images))))
    pg = pointing_game(maps, labels).mean()
    auc = np.nanmean(auroc(maps, labels))
    assert pg >= LIMITS["pointing_game_min"][target], f"pointing game {pg:.3f}"
    assert auc >= LIMITS["auroc_min"][target], f"AUROC {auc:.3f}"


def test_baselines_do_not_localize(detector, fakes):
    s, labels = fakes
    ids = list(range(len(s.images)))
    for name, fn in BASELINES.items():
        pg = pointing_game(compute_maps(fn, detector, s.normalized(), s.images, ids), labels).mean()
        assert pg <= LIMITS["baseline_pointing_game_max"], f"{name}: pointing game {pg:.3f}"


def test_randomization_changes_cam_but_not_priors(detector, fakes):
    s, _ = fakes
    n = LIMITS["n_sanity"]
    methods = {"cam": comparative_cam("contrastive", LIMITS["layer"]), **BASELINES}
    torch.manual_seed(0)
    out = cascading_randomization(detector, s.normalized()[:n], s.images[:n], list(range(n)),
                                  methods, log=lambda msg: None)
    final_cam = out["cam"]["spearman_abs_mean"][-1]
    assert final_cam <= LIMITS["randomized_abs_spearman_max"], f"CAM |rho| {final_cam:.3f}"
    for name in BASELINES:
        # A map that ignores the model is unchanged by randomizing it: it fails the check.
        assert out[name]["spearman_mean"] == pytest.approx([1.0] * len(out[name]["steps"])), name
    # the randomization leaves the trained detector itself untouched
    assert detector.model_id == PoundNet.from_checkpoint(HERE / "detector-quick.safetensors").model_id
