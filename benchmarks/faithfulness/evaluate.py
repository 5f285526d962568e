"""Run the evaluation for one profile: detector, maps, metrics, sanity checks -> one dict."""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from .data import make_set
from .methods import MODEL_FREE, build_methods, comparative_cam, compute_maps
from .metrics import (FRACTIONS, area_under, auroc, deletion_insertion, energy_share,
                      grid_labels, pointing_game)
from .sanity import cascading_randomization, class_swap
from .settings import Profile
from .train import accuracy, load_or_train

REFERENCE = "Planted mask (reference)"
# Pass/fail lines the report checks (the targets).
TARGET_POINTING = 0.9
RANDOMIZED_MAX_SPEARMAN = 0.5  # mean |Spearman| after every block is randomized


def _mean(a) -> float:
    return float(np.nanmean(np.asarray(a, dtype=float)))


def select_layer(model, profile: Profile, log=print) -> tuple[int, dict]:
    """The block whose ln_1 ComparativeCAM (contrastive) explains, chosen WITHOUT ground truth:
    the layer whose fake maps give the lowest deletion AUC on a separate selection split (the
    map whose top cells, once blurred, take P(fake) down fastest). A deployer can run the same
    rule on their own images."""
    sel = make_set(profile.seed, "select", profile.n_select, profile.data, fake_share=1.0)
    x = sel.normalized()
    ids = list(range(len(x)))
    scores = {}
    for layer in range(len(model.visual.transformer.resblocks)):
        m = compute_maps(comparative_cam("contrastive", layer), model, x, sel.images, ids)
        curves = deletion_insertion(model, sel.images, m)
        scores[layer] = {"deletion_auc": _mean(area_under(curves["deletion"])),
                         "insertion_auc": _mean(area_under(curves["insertion"]))}
        log(f"layer {layer}: selection deletion AUC {scores[layer]['deletion_auc']:.3f}")
    best = min(scores, key=lambda k: scores[k]["deletion_auc"])
    return best, scores


def evaluate(profile: Profile, cache_dir: Path, log=print) -> dict:
    t_start = time.perf_counter()
    model, train_info = load_or_train(profile.model, profile.data, profile.train, cache_dir, log=log)
    model.autocast_dtype = None
    g = model.visual.grid_size[0]

    held = make_set(profile.seed, "test", profile.n_eval, profile.data)
    acc = accuracy(model, held.images, held.labels)
    log(f"held-out accuracy {acc:.4f} on {profile.n_eval} images")

    loc = make_set(profile.seed, "localize", profile.n_localize, profile.data, fake_share=1.0)
    x = loc.normalized()
    ids = list(range(profile.n_localize))
    labels = grid_labels(loc.masks, g)
    with torch.no_grad():
        p_fake = torch.cat([model(x[i:i + 64]).softmax(-1)[:, 1] for i in range(0, len(x), 64)])
    log(f"localization set: {len(x)} fakes, {float((p_fake > 0.5).float().mean()):.3f} detected, "
        f"region covers {labels.float().mean().item():.3f} of the grid on average")

    layer, selection = select_layer(model, profile, log=log)
    n_layers = len(model.visual.transformer.resblocks)
    log(f"selected layer {layer} (default {n_layers - 1})")
    methods = build_methods(n_layers, layer)
    per_layer = {}
    for lay in range(n_layers):
        m = compute_maps(comparative_cam("contrastive", lay), model, x, loc.images, ids)
        per_layer[lay] = {"pointing_game": _mean(pointing_game(m, labels)),
                          "auroc": _mean(auroc(m, labels)), **selection[lay]}

    maps, rows = {}, {}
    nc = profile.n_curves
    for name, fn in methods.items():
        t0 = time.perf_counter()
        m = compute_maps(fn, model, x, loc.images, ids, cls=1)
        secs = (time.perf_counter() - t0) / len(x)
        maps[name] = m
        curves = deletion_insertion(model, loc.images[:nc], m[:nc])
        rows[name] = {
            "pointing_game": _mean(pointing_game(m, labels)),
            "auroc": _mean(auroc(m, labels)),
            "energy_share": _mean(energy_share(m, labels)),
            "deletion_auc": _mean(area_under(curves["deletion"])),
            "insertion_auc": _mean(area_under(curves["insertion"])),
            "deletion_curve": curves["deletion"].mean(0).tolist(),
            "insertion_curve": curves["insertion"].mean(0).tolist(),
            "seconds_per_image": secs,
            "uses_model": name not in MODEL_FREE,
        }
        r = rows[name]
        log(f"{name}: pointing {r['pointing_game']:.3f} AUROC {r['auroc']:.3f} "
            f"energy {r['energy_share']:.3f} deletion {r['deletion_auc']:.3f} "
            f"insertion {r['insertion_auc']:.3f}")
    ref = labels.float()
    curves = deletion_insertion(model, loc.images[:nc], ref[:nc])
    reference = {"deletion_auc": _mean(area_under(curves["deletion"])),
                 "insertion_auc": _mean(area_under(curves["insertion"])),
                 "deletion_curve": curves["deletion"].mean(0).tolist(),
                 "insertion_curve": curves["insertion"].mean(0).tolist(),
                 "uniform_energy_share": float(ref.flatten(1).mean(1).mean())}

    ns = profile.n_sanity
    log(f"sanity checks on {ns} fakes")
    randomization = cascading_randomization(model, x[:ns], loc.images[:ns], ids[:ns], methods,
                                            seed=profile.seed, log=log)
    swap = class_swap(model, x[:ns], loc.images[:ns], ids[:ns], methods)

    return {
        "profile": profile.name,
        "detector": {"config": json.loads(profile.model.to_json()),
                     "model_id": model.model_id, "held_out_accuracy": acc,
                     "held_out_images": profile.n_eval, "training": train_info,
                     "data": dataclasses.asdict(profile.data),
                     "train": dataclasses.asdict(profile.train)},
        "localization": {"n_fakes": len(x), "n_curves": nc, "grid": g,
                         "detected_share": float((p_fake > 0.5).float().mean()),
                         "mask_grid_share": float(labels.float().mean()),
                         "fractions": list(FRACTIONS), "methods": rows, "reference": reference},
        "layers": {"default": n_layers - 1, "selected": layer, "n_select": profile.n_select,
                   "per_layer": per_layer},
        "randomization": randomization,
        "class_swap": swap,
        "n_sanity": ns,
        "seconds_total": time.perf_counter() - t_start,
        "threads": torch.get_num_threads(),
        "_maps": maps, "_set": loc, "_labels": labels,
    }
