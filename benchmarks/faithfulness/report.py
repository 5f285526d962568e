"""Tables (JSON and Markdown) and figures (PNG) from an evaluation result."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

from .evaluate import (
    PEER_MAX_DIFF,
    RANDOMIZED_MAX_SPEARMAN,
    REFERENCE,
    RELEVANCE_DELETION_MAX,
    RELEVANCE_POINTING,
    TARGET_POINTING,
)
from .methods import CAM_LABEL, MODEL_FREE, cam_name, upsample

FIGURES = ("curves.png", "examples.png", "randomization.png")
MAX_FIGURE_BYTES = 300_000


def _default_ties(lay: dict, method: str) -> bool:
    """Whether the default block ties with the selected one for ``method`` (keys may be
    ints or, read back from JSON, strings)."""
    return any(v["tie"] for k, v in lay["per_layer"][method].items() if int(k) == lay["default"])


def checks(res: dict) -> list[tuple[str, bool, str]]:
    """The targets, each as (statement, passed, measured)."""
    rows = res["localization"]["methods"]
    out = []
    baselines = [m for m in rows if m in MODEL_FREE]
    for name in [m for m in rows if m.startswith("ComparativeCAM")]:
        r = rows[name]
        out.append(
            (
                f"{name}: pointing game >= {TARGET_POINTING}",
                r["pointing_game"] >= TARGET_POINTING,
                f"{r['pointing_game']:.3f}",
            )
        )
        best_pg = max(rows[b]["pointing_game"] for b in baselines)
        best_auc = max(rows[b]["auroc"] for b in baselines)
        out.append(
            (
                f"{name}: pointing game above the best baseline by >= 0.3",
                r["pointing_game"] - best_pg >= 0.3,
                f"margin {r['pointing_game'] - best_pg:+.3f}",
            )
        )
        out.append(
            (
                f"{name}: AUROC above the best baseline by >= 0.2",
                r["auroc"] - best_auc >= 0.2,
                f"margin {r['auroc'] - best_auc:+.3f}",
            )
        )
        if name.startswith("ComparativeCAM relevance"):
            out.append(
                (
                    f"{name}: pointing game >= {RELEVANCE_POINTING}",
                    r["pointing_game"] >= RELEVANCE_POINTING,
                    f"{r['pointing_game']:.3f}",
                )
            )
            out.append(
                (
                    f"{name}: deletion AUC <= {RELEVANCE_DELETION_MAX}",
                    r["deletion_auc"] <= RELEVANCE_DELETION_MAX,
                    f"{r['deletion_auc']:.3f}",
                )
            )
    for name, r in res.get("peer_agreement", {}).items():
        out.append(
            (
                f"{name} equals {r['ours']} (max abs difference of the 0..1 maps <= {PEER_MAX_DIFF:g})",
                r["max_abs_diff"] <= PEER_MAX_DIFF,
                f"{r['max_abs_diff']:.1e}",
            )
        )
    for name, r in res["randomization"].items():
        final = r["spearman_abs_mean"][-1]
        if name in MODEL_FREE:
            out.append((f"{name}: fails randomization (stays at 1)", final > 0.99, f"{final:.3f}"))
        else:
            out.append(
                (
                    f"{name}: passes randomization (mean abs Spearman <= "
                    f"{RANDOMIZED_MAX_SPEARMAN} with every block randomized)",
                    final <= RANDOMIZED_MAX_SPEARMAN,
                    f"{final:.3f}",
                )
            )
    return out


def markdown(res: dict) -> str:
    det, loc = res["detector"], res["localization"]
    cfg = det["config"]
    tr = det["training"]
    lines = [
        f"### Detector ({res['profile']} profile, {res['detector']['data']['artifact']} artifact)",
        "",
        f"PoundNet, vision width {cfg['vision_width']}, {cfg['vision_layers']} blocks, patch "
        f"{cfg['patch_size']}, grid {cfg['grid_size']}x{cfg['grid_size']}, "
        f"{cfg['n_ctx_vision']} visual prompt tokens; trained "
        f"{det['train']['steps']} steps of {det['train']['batch_size']} on {det['train']['pool']} "
        f"generated images in {tr.get('train_seconds', 0):.0f} s ({tr.get('threads')} CPU threads). "
        f"Held-out accuracy: **{det['held_out_accuracy']:.3f}** on {det['held_out_images']} images "
        f"(half fake). Model id `{det['model_id']}`.",
        "",
        f"### Localization on {loc['n_fakes']} held-out fakes",
        "",
        f"Grid resolution ({loc['grid']}x{loc['grid']}); a cell is inside the planted region when "
        f"the region covers at least half of it (on average {loc['mask_grid_share']:.3f} of the "
        f"cells; that is the energy share of a uniform map). The detector calls "
        f"{loc['detected_share']:.3f} of these images fake. Deletion and insertion: "
        f"{loc['n_curves']} of the fakes, cells replaced by a Gaussian blur (sigma 4 px) of the "
        "image; areas under the mean P(fake) curve over the fraction of cells (0..1).",
        "",
        "| method | pointing game | AUROC | energy in mask | deletion AUC (lower is better) "
        "| insertion AUC (higher is better) | ms / image |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in loc["methods"].items():
        lines.append(
            f"| {name} | {r['pointing_game']:.3f} | {r['auroc']:.3f} | "
            f"{r['energy_share']:.3f} | {r['deletion_auc']:.3f} | {r['insertion_auc']:.3f} | "
            f"{1000 * r['seconds_per_image']:.1f} |"
        )
    ref = loc["reference"]
    lines.append(
        f"| *{REFERENCE}* | 1.000 | 1.000 | 1.000 | {ref['deletion_auc']:.3f} | "
        f"{ref['insertion_auc']:.3f} | |"
    )
    lay = res["layers"]
    chosen = ", ".join(f"{CAM_LABEL[m]} **block {b}**" for m, b in lay["selected"].items())
    used = sorted({v["images"] for per in lay["per_layer"].values() for v in per.values()})
    lines += [
        "",
        "### Which layer ComparativeCAM explains",
        "",
        f"Chosen without ground truth, per weighting, by the library's rule "
        f"(`poundcam.cam.calibration`, the one `poundcam calibrate` runs): the block whose "
        f"`ln_1` gives the lowest deletion AUC for ComparativeCAM (contrastive) on the fakes of a "
        f"separate selection split ({lay['n_select']} generated, "
        f"{'/'.join(str(u) for u in used)} labelled fake by the detector and used). Selected: "
        f"{chosen} (the library default is the last block, {lay['default']}). Pointing game and "
        "AUROC (contrastive) on the localization set are shown for every block but were not used "
        "for the choice.",
        "",
        "Behind the selected block: how much higher the block's selection deletion AUC is than "
        "the selected block's, with the standard error of that paired difference over the "
        "images; within twice it `poundcam calibrate` calls the two a tie and keeps the "
        "current layer.",
        "",
        "| weighting | block | selection deletion AUC | behind the selected block (s.e.) "
        "| selection P(fake) after 10% deleted | pointing game | AUROC |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, per in lay["per_layer"].items():
        for k, v in per.items():
            roles = [
                t
                for t, ok in (
                    ("selected", int(k) == lay["selected"][method]),
                    ("default", int(k) == lay["default"]),
                )
                if ok
            ]
            mark = f" ({', '.join(roles)})" if roles else ""
            behind, se = v["behind_selected"]
            gap = "" if int(k) == lay["selected"][method] else f"{behind:+.3f} ({se:.3f})"
            gap += ", a tie" if v["tie"] else ""
            lines.append(
                f"| {CAM_LABEL[method]} | {k}{mark} | {v['deletion_auc']:.3f} | {gap} | "
                f"{v['p_fake_after']:.3f} | {v['pointing_game']:.3f} | {v['auroc']:.3f} |"
            )
    across = lay.get("across")
    if across:
        gain, se = across["gain_over_service"]
        chose_service_setting = (across["method"], int(across["layer"])) == (
            across["service_method"],
            int(across["service_layer"]),
        )
        verdict = (
            "the service's setting itself"
            if chose_service_setting
            else f"its gain over the service's setting ({CAM_LABEL[across['service_method']]} at "
            f"block {across['service_layer']}): {gain:.3f} selection deletion AUC, standard error "
            f"{se:.3f}" + (", a tie (`poundcam calibrate` keeps the setting)" if across["tie"] else "")
        )
        lines += [
            "",
            f"Across both weightings (`poundcam calibrate --method gradcam,hirescam`, the same "
            f"scores): {CAM_LABEL[across['method']]} at **block {across['layer']}**; {verdict}.",
        ]
    lines += [
        "",
        "### Calibrated layer against the default",
        "",
        f"ComparativeCAM (contrastive) at the selected block and at the default (last) block, "
        f"scored on the {loc['n_fakes']} localization fakes (deletion on {loc['n_curves']}).",
        "",
        "| weighting | layer | pointing game | AUROC | deletion AUC (lower is better) |",
        "|---|---|---|---|---|",
    ]
    for method, sel in lay["selected"].items():
        for tag, k in (("default", lay["default"]), ("calibrated", sel)):
            r = loc["methods"][cam_name("contrastive", int(k), method)]
            same = " (= default)" if tag == "calibrated" and int(k) == lay["default"] else ""
            if tag == "calibrated" and _default_ties(lay, method):
                same = f" (a tie with the default: `poundcam calibrate` keeps L{lay['default']})"
            lines.append(
                f"| {CAM_LABEL[method]} | {tag}: L{k}{same} | {r['pointing_game']:.3f} | "
                f"{r['auroc']:.3f} | {r['deletion_auc']:.3f} |"
            )
    if res.get("peer_agreement"):
        lines += [
            "",
            "### Agreement with pytorch-grad-cam",
            "",
            "The library's map against ComparativeCAM's `logit`-target map with the same "
            "weighting at the same layer (the library's target is the class logit); ours is "
            "min-max scaled to 0..1 as the library scales its own.",
            "",
            "| pytorch-grad-cam | ComparativeCAM | max abs difference | same peak cell | mean Spearman |",
            "|---|---|---|---|---|",
        ]
        for name, r in res["peer_agreement"].items():
            lines.append(
                f"| {name} | {r['ours']} | {r['max_abs_diff']:.1e} | "
                f"{r['same_peak_share']:.3f} | {r['spearman_mean']:+.4f} |"
            )
    steps = next(iter(res["randomization"].values()))["steps"]
    lines += [
        "",
        f"### Cascading randomization ({res['n_sanity']} fakes)",
        "",
        "Mean Spearman rank correlation between the trained model's fake map and the map "
        "after re-initializing, cumulatively, the head and then each block from the top; in "
        "brackets the mean of its absolute value (an inverted map still keeps the structure).",
        "",
        "| method | " + " | ".join(steps) + " |",
        "|---|" + "---|" * len(steps),
    ]
    for name, r in res["randomization"].items():
        lines.append(
            f"| {name} | "
            + " | ".join(
                f"{v:+.2f} ({a:.2f})" for v, a in zip(r["spearman_mean"], r["spearman_abs_mean"], strict=True)
            )
            + " |"
        )
    lines += [
        "",
        f"### Class swap ({res['n_sanity']} fakes)",
        "",
        "Fake map against the same method's real map: mean Spearman correlation and the share "
        "of images where the two maps are identical.",
        "",
        "| method | Spearman(fake map, real map) | identical maps |",
        "|---|---|---|",
    ]
    for name, r in res["class_swap"].items():
        lines.append(f"| {name} | {r['spearman_mean']:+.2f} | {r['identical_share']:.2f} |")
    lines += ["", "### Targets", "", "| check | result | measured |", "|---|---|---|"]
    for text, ok, measured in checks(res):
        lines.append(f"| {text} | {'pass' if ok else 'FAIL'} | {measured} |")
    trained = (
        "loaded from the cache; training it took "
        f"{tr.get('data_seconds', 0) + tr.get('train_seconds', 0):.0f} s"
        if tr.get("cached")
        else "trained in this run"
    )
    lines += [
        "",
        f"Whole evaluation: {res['seconds_total']:.0f} s on {res['threads']} CPU threads "
        f"(detector {trained}, data generation included).",
    ]
    return "\n".join(lines) + "\n"


def _save(fig, path: Path) -> None:
    """Save a figure as PNG, reduced to a 256-colour palette if it would exceed the size cap."""
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    data = buf.getvalue()
    if len(data) > MAX_FIGURE_BYTES:
        img = Image.open(io.BytesIO(data)).convert("RGB").quantize(256)
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=True)
        data = buf.getvalue()
    path.write_bytes(data)


def _colours(names):
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    return {n: cmap((2 * i) % 20 + (2 * i) // 20) for i, n in enumerate(names)}


def figure_curves(res: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    loc = res["localization"]
    f = loc["fractions"]
    names = list(loc["methods"])
    col = _colours(names)
    fig, axes = plt.subplots(1, 2, figsize=(10, 6.2), dpi=90)
    for ax, kind in zip(axes, ("deletion", "insertion"), strict=True):
        for n in names:
            style = "--" if n in MODEL_FREE else "-"
            ax.plot(
                f,
                loc["methods"][n][f"{kind}_curve"],
                style,
                color=col[n],
                lw=1.4,
                label=f"{n} ({loc['methods'][n][f'{kind}_auc']:.2f})",
            )
        ax.plot(
            f,
            loc["reference"][f"{kind}_curve"],
            ":",
            color="k",
            lw=1.2,
            label=f"{REFERENCE} ({loc['reference'][f'{kind}_auc']:.2f})",
        )
        ax.set_title(
            f"{kind.capitalize()}: cells {'blurred' if kind == 'deletion' else 'restored'} in map order",
            fontsize=9,
        )
        ax.set_xlabel("fraction of grid cells", fontsize=8)
        ax.set_ylabel("mean P(fake)", fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.tick_params(labelsize=7)
        ax.legend(
            fontsize=5.5,
            ncol=2,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.16),
            frameon=False,
            title="method (area under the curve)",
            title_fontsize=6,
        )
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def _short_title(name: str) -> str:
    """A method's name on up to three lines, to fit a narrow column."""
    for lib in ("ComparativeCAM ", "pytorch-grad-cam "):
        if name.startswith(lib):
            name = lib.strip() + "\n" + name[len(lib) :]
    return name.replace(" (", "\n(")


def figure_examples(res: dict, path: Path, n: int) -> None:
    import matplotlib.pyplot as plt

    loc_set, maps = res["_set"], res["_maps"]
    names = list(maps)
    fig, axes = plt.subplots(n, len(names) + 1, figsize=(1.25 * (len(names) + 1), 1.35 * n), dpi=80)
    size = loc_set.images.shape[-1]
    for row in range(n):
        img = loc_set.images[row].permute(1, 2, 0).numpy()
        mask = loc_set.masks[row].numpy()
        ax = axes[row, 0]
        ax.imshow(img)
        ax.contour(mask, levels=[0.5], colors="w", linewidths=0.8)
        if row == 0:
            ax.set_title("image + planted\nregion", fontsize=6)
        for j, name in enumerate(names, start=1):
            m = maps[name][row : row + 1]
            up = upsample(m, size)[0].numpy()
            peak = up.max()
            up = up / peak if peak > 0 else up
            ax = axes[row, j]
            ax.imshow(img)
            ax.imshow(up, cmap="jet", alpha=0.5, vmin=0, vmax=1)
            ax.contour(mask, levels=[0.5], colors="w", linewidths=0.6)
            if row == 0:
                ax.set_title(_short_title(name), fontsize=6)
    for ax in axes.flat:
        ax.set_axis_off()
    fig.tight_layout(pad=0.2)
    _save(fig, path)
    plt.close(fig)


def figure_randomization(res: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    names = list(res["randomization"])
    col = _colours(names)
    fig, ax = plt.subplots(figsize=(8, 3.8), dpi=90)
    for n in names:
        r = res["randomization"][n]
        ax.plot(
            range(len(r["steps"])),
            r["spearman_mean"],
            "--o" if n in MODEL_FREE else "-o",
            color=col[n],
            ms=3,
            lw=1.3,
            label=n,
        )
        ticks = r["steps"]
    ax.set_xticks(range(len(ticks)), ticks, fontsize=7)
    ax.set_xlabel("randomized (cumulative, from the top)", fontsize=8)
    ax.set_ylabel("mean Spearman vs trained maps", fontsize=8)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_ylim(-0.65, 1.05)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def write(res: dict, out_dir: Path, n_examples: int, docs_dir: Path | None = None) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    out_dir.mkdir(parents=True, exist_ok=True)
    public = {k: v for k, v in res.items() if not k.startswith("_")}
    public["checks"] = [{"check": t, "passed": ok, "measured": m} for t, ok, m in checks(res)]
    paths = {"json": out_dir / "results.json", "markdown": out_dir / "tables.md"}
    paths["json"].write_text(json.dumps(public, indent=1))
    paths["markdown"].write_text(markdown(res))
    figure_curves(res, out_dir / "curves.png")
    figure_examples(res, out_dir / "examples.png", n_examples)
    figure_randomization(res, out_dir / "randomization.png")
    for f in FIGURES:
        paths[f] = out_dir / f
    if docs_dir is not None:
        docs_dir.mkdir(parents=True, exist_ok=True)
        for f in ("results.json", "tables.md", *FIGURES):  # the tables with the numbers behind them
            shutil.copyfile(out_dir / f, docs_dir / f)
    return paths
