"""Fast version of the faithfulness evaluation (benchmarks/faithfulness, docs/faithfulness.md).

A small PoundNet trained on planted up-sampling artifacts (committed as detector-quick.safetensors,
made by ``python -m benchmarks.faithfulness --quick --export tests/faithfulness/detector-quick.safetensors``)
must keep localizing them with ComparativeCAM at the levels recorded in thresholds.json (GradCAM
at the selected block, and attention relevance, whose deleted top cells must also remove the
decision), its maps must change when the model is randomized, and the model-free priors must
not.

HiResCAM at the default layer (the last block) is guarded on the full profile's detector
(detector-full.safetensors, ``python -m benchmarks.faithfulness --export
tests/faithfulness/detector-full.safetensors``): that is the detector on which it localizes
(docs/faithfulness.md); on the 3-block quick detector its last-block maps do not, so a floor
there would guard nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.faithfulness.data import make_set
from benchmarks.faithfulness.methods import BASELINES, comparative_cam, compute_maps
from benchmarks.faithfulness.metrics import (
    area_under,
    auroc,
    deletion_insertion,
    energy_share,
    grid_labels,
    pointing_game,
)
from benchmarks.faithfulness.sanity import cascading_randomization, class_swap
from benchmarks.faithfulness.settings import PROFILES
from benchmarks.faithfulness.train import accuracy, settings_key
from poundcam.model import PoundNet

HERE = Path(__file__).parent
LIMITS = json.loads((HERE / "thresholds.json").read_text())
PROFILE = PROFILES["quick"]
FULL = PROFILES["full"]
REGENERATE = (
    "python -m benchmarks.faithfulness --quick --export "
    "tests/faithfulness/detector-quick.safetensors, then update thresholds.json"
)
REGENERATE_FULL = (
    "python -m benchmarks.faithfulness --export "
    "tests/faithfulness/detector-full.safetensors, then update thresholds.json"
)


def _load(profile, filename: str, expected_key: str, regenerate: str) -> PoundNet:
    key = settings_key(profile.model, profile.data, profile.train)
    assert key == expected_key, (
        f"the {profile.name} profile's settings changed (key {key}); the committed detector no "
        f"longer matches them. Regenerate: {regenerate}"
    )
    model = PoundNet.from_checkpoint(HERE / filename)
    assert model.config == profile.model
    return model


@pytest.fixture(scope="module")
def detector():
    return _load(PROFILE, "detector-quick.safetensors", LIMITS["settings_key"], REGENERATE)


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
    maps = compute_maps(
        comparative_cam(target, LIMITS["layer"]),
        detector,
        s.normalized(),
        s.images,
        list(range(len(s.images))),
    )
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
    out = cascading_randomization(
        detector, s.normalized()[:n], s.images[:n], list(range(n)), methods, log=lambda msg: None
    )
    final_cam = out["cam"]["spearman_abs_mean"][-1]
    assert final_cam <= LIMITS["randomized_abs_spearman_max"], f"CAM |rho| {final_cam:.3f}"
    for name in BASELINES:
        # A map that ignores the model is unchanged by randomizing it: it fails the check.
        assert out[name]["spearman_mean"] == pytest.approx([1.0] * len(out[name]["steps"])), name
    # the randomization leaves the trained detector itself untouched
    assert detector.model_id == PoundNet.from_checkpoint(HERE / "detector-quick.safetensors").model_id


@pytest.mark.parametrize("target", ["contrastive", "logit"])
def test_hirescam_localizes_at_the_default_layer(target):
    """ComparativeCAM(method="hirescam") at the last block of the full profile's detector."""
    lim = LIMITS["hirescam_default_layer"]
    model = _load(FULL, "detector-full.safetensors", lim["settings_key"], REGENERATE_FULL)
    s = make_set(FULL.seed, "localize", lim["n_fakes"], FULL.data, fake_share=1.0)
    labels = grid_labels(s.masks, FULL.model.grid_size)
    maps = compute_maps(
        comparative_cam(target, -1, "hirescam"), model, s.normalized(), s.images, list(range(len(s.images)))
    )
    pg = pointing_game(maps, labels).mean()
    auc = np.nanmean(auroc(maps, labels))
    assert pg >= lim["pointing_game_min"][target], f"pointing game {pg:.3f}"
    assert auc >= lim["auroc_min"][target], f"AUROC {auc:.3f}"
    # GradCAM at the same layer of the same detector is recorded below it: HiResCAM's lead
    # there is the reason it exists.
    base = compute_maps(
        comparative_cam(target, -1, "gradcam"), model, s.normalized(), s.images, list(range(len(s.images)))
    )
    assert pg - pointing_game(base, labels).mean() >= lim["lead_over_gradcam_min"][target]


@pytest.mark.parametrize("target", ["contrastive", "logit"])
def test_relevance_localizes_and_deleting_its_cells_removes_the_decision(detector, target):
    """ComparativeCAM(method="relevance") on the quick detector: the planted artifact is where
    its peak is, and blurring its top cells takes P(fake) down fast (deletion AUC)."""
    lim = LIMITS["relevance"]
    s = make_set(PROFILE.seed, "localize", lim["n_fakes"], PROFILE.data, fake_share=1.0)
    labels = grid_labels(s.masks, PROFILE.model.grid_size)
    maps = compute_maps(
        comparative_cam(target, None, "relevance"),
        detector,
        s.normalized(),
        s.images,
        list(range(len(s.images))),
    )
    pg = pointing_game(maps, labels).mean()
    auc = np.nanmean(auroc(maps, labels))
    energy = energy_share(maps, labels).mean()
    nc = lim["n_curves"]
    curves = deletion_insertion(detector, s.images[:nc], maps[:nc])
    deletion = np.mean(area_under(curves["deletion"]))
    insertion = np.mean(area_under(curves["insertion"]))
    assert pg >= lim["pointing_game_min"][target], f"pointing game {pg:.3f}"
    assert auc >= lim["auroc_min"][target], f"AUROC {auc:.3f}"
    assert energy >= lim["energy_share_min"][target], f"energy in the region {energy:.3f}"
    assert deletion <= lim["deletion_auc_max"][target], f"deletion AUC {deletion:.3f}"
    assert insertion >= lim["insertion_auc_min"][target], f"insertion AUC {insertion:.3f}"
    # the service's map (HiResCAM at the default layer, the last block) on the same fakes: the
    # deep map's top cells must remove the decision much faster (the reason to compute it)
    fast = compute_maps(
        comparative_cam(target, -1, "hirescam"), detector, s.normalized()[:nc], s.images[:nc], list(range(nc))
    )
    fast_deletion = np.mean(area_under(deletion_insertion(detector, s.images[:nc], fast)["deletion"]))
    lead = fast_deletion - deletion
    assert lead >= lim["deletion_lead_over_default_hirescam_min"][target], f"lead {lead:.3f}"


def test_relevance_passes_the_sanity_checks(detector, fakes):
    """Randomizing the model changes the relevance maps; the real and fake maps differ."""
    s, _ = fakes
    lim = LIMITS["relevance"]
    n = LIMITS["n_sanity"]
    x, images, ids = s.normalized()[:n], s.images[:n], list(range(n))
    methods = {t: comparative_cam(t, None, "relevance") for t in ("contrastive", "logit")}
    torch.manual_seed(0)
    out = cascading_randomization(detector, x, images, ids, methods, log=lambda msg: None)
    swap = class_swap(detector, x, images, ids, methods)
    for t in methods:
        final = out[t]["spearman_abs_mean"][-1]
        assert final <= lim["randomized_abs_spearman_max"], f"{t}: |rho| {final:.3f}"
        assert swap[t]["identical_share"] == 0, t
        assert swap[t]["spearman_mean"] <= lim["class_swap_spearman_max"], t
