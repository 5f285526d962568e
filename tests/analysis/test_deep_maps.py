"""The deep maps (POUNDCAM_DEEP_MAPS): the setting, which images get them, that they are
ComparativeCAM(method="relevance")'s maps of the same input, how they enter the configuration
id, and that the pipeline stores them beside the fast maps."""

from __future__ import annotations

import io

import numpy as np
import pytest
import sqlalchemy as sa
import torch
from PIL import Image

from poundcam.analysis import AnalysisOptions, Analyzer, cam_config_id, fast_config_id
from poundcam.cam import ComparativeCAM
from poundcam.errors import InvalidRequestError
from poundcam.preprocess.decode import decode_image
from poundcam.preprocess.transform import preprocess
from poundcam.settings import Settings, SettingsError
from poundcam.storage.stores import heatmap_key


def _image(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    w, h = int(rng.integers(120, 300)), int(rng.integers(120, 300))
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * (2 + c + seed) + y * (5 - c)) % 256 for c in range(3)], -1)
    noisy = np.clip(base + rng.integers(-40, 41, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noisy, "RGB").save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def inputs() -> list[tuple[str, bytes]]:
    return [(f"img{i}", _image(i)) for i in range(8)]


@pytest.fixture(scope="module")
def model(tiny_model_factory):
    return tiny_model_factory(seed=3)


@pytest.fixture
def first_deep_map_broken(monkeypatch):
    """The relevance of each batch's first image is not finite (and reported so)."""
    from poundcam.cam.relevance import AttentionRelevance

    real_maps = AttentionRelevance.class_maps

    def broken_first(self, x):
        maps = real_maps(self, x)
        maps.fake[0] = float("nan")
        maps.invalid[0] = "non-finite attention relevance (test)"
        return maps

    monkeypatch.setattr(AttentionRelevance, "class_maps", broken_first)


def _run(model, inputs, **opts) -> list:
    options = AnalysisOptions(**{"batch_size": 3, "decode_threads": 2, "preprocess": "pillow", **opts})
    with Analyzer(model, options, device="cpu") as analyzer:
        return list(analyzer.analyze(inputs))


@pytest.fixture(scope="module")
def fast(model, inputs) -> dict:
    return {o.key: o.result for o in _run(model, inputs)}


@pytest.fixture(scope="module")
def relevance(model, inputs):
    """What the library computes on the official transform of each input, in one batch."""
    x = torch.stack([preprocess(decode_image(d).image) for _, d in inputs])
    return ComparativeCAM(model, method="relevance").attribute(x)


def test_setting_validated_and_off_by_default():
    assert Settings.from_env(environ={}).deep_maps == "none"
    for value in ("none", "flagged", "all"):
        assert Settings.from_env(environ={"POUNDCAM_DEEP_MAPS": value}).deep_maps == value
    with pytest.raises(SettingsError, match="POUNDCAM_DEEP_MAPS.*none, flagged, all"):
        Settings.from_env(environ={"POUNDCAM_DEEP_MAPS": "some"})
    with pytest.raises(ValueError, match="deep_maps must be one of"):
        Analyzer(torch.nn.Linear(1, 1), AnalysisOptions(deep_maps="some"), device="cpu")


def test_no_deep_maps_by_default(fast):
    assert all(r.deep_real_map is None and r.deep_fake_map is None for r in fast.values())


def test_all_equals_the_relevance_method_on_the_same_input(model, inputs, fast, relevance):
    out = {o.key: o.result for o in _run(model, inputs, deep_maps="all")}
    for i, (key, _) in enumerate(inputs):
        r = out[key]
        assert r.deep_real_map.dtype == np.float32 and r.deep_real_map.shape == fast[key].real_map.shape
        assert np.allclose(r.deep_real_map, relevance.real[i].numpy(), rtol=1e-5, atol=1e-5)
        assert np.allclose(r.deep_fake_map, relevance.fake[i].numpy(), rtol=1e-5, atol=1e-5)
        # the fast maps and the probabilities are those of the run without deep maps
        assert np.array_equal(r.real_map, fast[key].real_map)
        assert np.array_equal(r.fake_map, fast[key].fake_map)
        assert r.p_fake == fast[key].p_fake
    assert any(float(np.abs(out[k].deep_fake_map).max()) > 0 for k, _ in inputs)


def test_deep_maps_alone_equal_those_of_the_full_pass(model, inputs, fast, relevance):
    """``fast_maps=False`` (``poundcam explain``) spends no pass on the fast maps: every image
    gets the deep maps and the probabilities of the full analysis, and nothing else."""
    out = {o.key: o.result for o in _run(model, inputs, deep_maps="all", render=False, fast_maps=False)}
    for i, (key, _) in enumerate(inputs):
        r = out[key]
        assert np.allclose(r.deep_real_map, relevance.real[i].numpy(), rtol=1e-5, atol=1e-5)
        assert np.allclose(r.deep_fake_map, relevance.fake[i].numpy(), rtol=1e-5, atol=1e-5)
        assert r.p_fake == pytest.approx(fast[key].p_fake, abs=1e-6)
        assert r.sha256 == fast[key].sha256 and r.label == fast[key].label
        assert r.real_map is None and r.fake_map is None and r.stats == {} and r.heatmaps == {}


def test_deep_maps_alone_only_for_every_image_without_heatmap(model):
    for opts in ({"deep_maps": "flagged", "render": False}, {"deep_maps": "all", "render": True}):
        with pytest.raises(ValueError, match="fast_maps=False needs deep_maps='all' and render=False"):
            Analyzer(model, AnalysisOptions(fast_maps=False, **opts), device="cpu")


def test_deep_maps_alone_fail_an_item_whose_map_cannot_be_computed(model, inputs, first_deep_map_broken):
    out = _run(model, inputs[:3], deep_maps="all", render=False, fast_maps=False, batch_size=3)
    assert out[0].error_code == "cam_unavailable"
    assert out[0].error_message == "deep map: non-finite attention relevance (test)"
    assert all(o.ok and o.result.deep_fake_map is not None for o in out[1:])


def test_flagged_only_over_the_threshold(model, inputs, fast, relevance):
    p = sorted(r.p_fake for r in fast.values())
    threshold = (p[3] + p[4]) / 2  # half the images over it
    assert p[3] < threshold < p[4]
    out = {o.key: o.result for o in _run(model, inputs, deep_maps="flagged", threshold=threshold)}
    flagged = [k for k, r in fast.items() if r.p_fake >= threshold]
    assert len(flagged) == 4
    for i, (key, _) in enumerate(inputs):
        r = out[key]
        if key in flagged:
            assert r.label == "fake"
            assert np.allclose(r.deep_real_map, relevance.real[i].numpy(), rtol=1e-5, atol=1e-5)
            assert np.allclose(r.deep_fake_map, relevance.fake[i].numpy(), rtol=1e-5, atol=1e-5)
        else:
            assert r.label == "real" and r.deep_real_map is None and r.deep_fake_map is None


def test_cam_config_id_names_the_deep_setting(model):
    ids = {}
    for deep in ("none", "flagged", "all"):
        with Analyzer(model, AnalysisOptions(deep_maps=deep), device="cpu") as analyzer:
            ids[deep] = analyzer.cam_config_id
            fast_id = analyzer.cam.config_id
    last = model.block_index(-1)
    assert ids["none"] == fast_id == f"hirescam-ln_1-L{last}-contrastive"  # unchanged
    assert ids["flagged"] == f"{fast_id}.deep-flagged-0.5" and ids["all"] == f"{fast_id}.deep-all"
    assert all(len(i) <= 64 for i in ids.values())  # analyses.cam_config_id is String(64)
    assert all(fast_config_id(i) == fast_id for i in ids.values())
    with Analyzer(
        model,
        AnalysisOptions(deep_maps="all", cam_method="gradcam", cam_layer=1, cam_target="logit"),
        device="cpu",
    ) as analyzer:
        assert analyzer.cam_config_id == "gradcam-ln_1-L1-logit.deep-all"


def test_the_threshold_is_in_the_id_of_flagged_only():
    """ "flagged" chooses by the threshold, so each threshold has rows of its own; "none" and
    "all" do not depend on it, and their ids stay as they were."""
    fast = "hirescam-ln_1-L23-contrastive"
    assert cam_config_id(fast, "flagged", 0.5) == f"{fast}.deep-flagged-0.5"
    assert cam_config_id(fast, "flagged", 0.73) == f"{fast}.deep-flagged-0.73"
    assert cam_config_id(fast, "flagged", 1) == f"{fast}.deep-flagged-1.0"
    assert (
        cam_config_id(fast, "flagged", -0.0)
        == cam_config_id(fast, "flagged", 0.0)
        == f"{fast}.deep-flagged-0.0"
    )
    assert cam_config_id(fast, "flagged", 2.5e-8) == f"{fast}.deep-flagged-2.5e-08"
    # one float, one id, however the setting was written; floats apart, ids apart
    texts = ("0.5", "0.50", ".5", "5e-1", "0.500000000000000001")
    assert {
        cam_config_id(fast, "flagged", Settings.from_env(environ={"POUNDCAM_THRESHOLD": t}).threshold)
        for t in texts
    } == {f"{fast}.deep-flagged-0.5"}
    near = float(np.nextafter(0.5, 1.0))
    assert cam_config_id(fast, "flagged", near) != cam_config_id(fast, "flagged", 0.5)
    assert float(cam_config_id(fast, "flagged", near).rsplit(".deep-flagged-", 1)[1]) == near
    for t in (0.0, 0.3, 0.5, 1.0):
        assert cam_config_id(fast, "none", t) == fast and cam_config_id(fast, "all", t) == f"{fast}.deep-all"
    for t in (0.5, 2.5e-8, 0.1 + 0.2):
        ident = cam_config_id(fast, "flagged", t)
        assert fast_config_id(ident) == fast
        heatmap_key("heatmaps/", "a" * 64, "m" * 12, ident, "comparative")  # a valid key segment


def test_a_threshold_too_long_for_the_id_is_refused(model):
    with pytest.raises(InvalidRequestError, match="over 64 characters; give the threshold"):
        Analyzer(model, AnalysisOptions(deep_maps="flagged", threshold=1.2345678901234567e-300), device="cpu")
    # the same threshold is no part of the id without "flagged"
    Analyzer(model, AnalysisOptions(deep_maps="all", threshold=1.2345678901234567e-300), device="cpu").close()


def test_make_analyzer_passes_the_setting(model):
    from poundcam.runtime import make_analyzer

    settings = Settings.from_env(environ={"POUNDCAM_DEEP_MAPS": "flagged"})
    analyzer = make_analyzer(settings, model=model, device=torch.device("cpu"))
    try:
        assert analyzer.options.deep_maps == "flagged"
        assert analyzer.deep_cam is not None and analyzer.deep_cam.method == "relevance"
    finally:
        analyzer.close()


def test_a_deep_map_that_cannot_be_computed_fails_its_item(model, inputs, first_deep_map_broken):
    """No fallback: an image whose deep map is not finite fails with cam_unavailable and the
    reason; the others of its batch are stored with theirs."""
    out = _run(model, inputs[:3], deep_maps="all", batch_size=3)
    assert out[0].error_code == "cam_unavailable"
    assert out[0].error_message == "deep map: non-finite attention relevance (test)"
    assert all(o.ok and o.result.deep_fake_map is not None for o in out[1:])


def test_the_pipeline_stores_them_beside_the_fast_maps(tmp_path, db_url, model, inputs):
    from poundcam.db import Analysis, create_job, item_refs, make_session_factory, session_scope
    from poundcam.db.migrate import upgrade
    from poundcam.db.repository import stored_map
    from poundcam.pipeline import PipelineContext, process_items
    from poundcam.storage import LocalStore

    images = tmp_path / "images"
    images.mkdir()
    for key, data in inputs[:4]:
        (images / f"{key}.png").write_bytes(data)
    upgrade(db_url)
    sessions = make_session_factory(db_url)
    store = LocalStore(tmp_path / "out", read_roots=[images])
    options = AnalysisOptions(batch_size=3, decode_threads=2, preprocess="pillow", deep_maps="all")
    with Analyzer(model, options, device="cpu") as analyzer:
        ctx = PipelineContext(
            analyzer=analyzer, source=store, sink=store, sessions=sessions, io_threads=2, store_threads=1
        )
        try:
            with session_scope(sessions) as s:
                job = create_job(s, [str(images / f"{k}.png") for k, _ in inputs[:4]])
                refs = [(r["item_id"], r["uri"]) for r in item_refs(s, job)]
            outcomes: list = []
            report = process_items(ctx, refs, progress=outcomes.append, job_id=job)
            assert report.done == 4, [(o.error_code, o.error_message) for o in outcomes]
            with sessions() as s:
                rows = list(s.execute(sa.select(Analysis)).scalars())
            assert len(rows) == 4
            by_sha = {o.result.sha256: o.result for o in outcomes}
            for row in rows:
                r = by_sha[row.sha256]
                assert row.cam_config_id == analyzer.cam_config_id
                assert row.cam_config_id.endswith(".deep-all")
                assert np.array_equal(stored_map(row.deep_real_map), r.deep_real_map)
                assert np.array_equal(stored_map(row.deep_fake_map), r.deep_fake_map)
                assert np.array_equal(stored_map(row.fake_map), r.fake_map)
        finally:
            ctx.close()
            sessions.kw["bind"].dispose()


def test_analyze_command_idempotent_per_deep_setting(tmp_path, official_dir, capsys):
    """`poundcam analyze --deep-maps`: its analyses are rows of their own configuration, reused
    by a second run with the same setting; the default run neither reuses nor changes them."""
    import json

    from poundcam.cli import main
    from poundcam.db import Analysis, make_session_factory

    images = tmp_path / "images"
    images.mkdir()
    for key, data in [(f"img{i}", _image(10 + i)) for i in range(2)]:
        (images / f"{key}.png").write_bytes(data)
    db = f"sqlite:///{tmp_path / 'poundcam.db'}"
    base = [
        "analyze",
        str(images),
        "--db",
        db,
        "--out",
        str(tmp_path / "out"),
        "--device",
        "cpu",
        "--weights",
        str(official_dir / "last.ckpt"),
        "--json",
    ]

    def rows():
        sessions = make_session_factory(db)
        try:
            with sessions() as s:
                return {
                    (a.id, a.cam_config_id, a.deep_real_map is not None)
                    for a in s.execute(sa.select(Analysis)).scalars()
                }
        finally:
            sessions.kw["bind"].dispose()

    assert main([*base, "--deep-maps", "flagged", "--threshold", "0"]) == 0
    capsys.readouterr()
    deep = rows()
    assert len(deep) == 2 and all(c.endswith(".deep-flagged-0.0") and has for _, c, has in deep)
    assert main([*base, "--deep-maps", "flagged", "--threshold", "0"]) == 0  # reused
    assert json.loads(capsys.readouterr().out)["results"][0]["status"] == "done"
    assert rows() == deep
    assert main(base) == 0  # the default configuration: rows of its own, without deep maps
    capsys.readouterr()
    fast = rows() - deep
    assert len(fast) == 2 and all(".deep-" not in c and not has for _, c, has in fast)
