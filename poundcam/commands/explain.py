"""``poundcam explain JOB|ANALYSIS``: the deep maps of analysed images, computed on demand.

For a reviewer: the analyses of a job (or one analysis) that have no deep maps get them now,
attention relevance through every block (``ComparativeCAM(method="relevance")``, docs/cam.md),
computed by the Analyzer on the image read again from its submitted source (checked to be the
analysed bytes) with the analysis's own model and CAM configuration, and stored into the
analysis row (``analyses.deep_real_map``, ``deep_fake_map``). Only the deep maps are computed:
the fast ones are stored already. One line per analysis; an analysis whose deep maps cannot be
computed is reported with its reason and the rest go on.
"""

from __future__ import annotations

import dataclasses
import sys

from ..constants import DeepMaps
from ..errors import PoundcamError
from ..logs import one_line
from .common import add_db_option, add_model_options, model_overrides, settings_for


class ExplainError(PoundcamError):
    """One analysis cannot be explained here; ``code`` says why."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def register(sub) -> None:
    p = sub.add_parser(
        "explain",
        help="compute and store the deep maps of analysed images",
        description="Compute the deep maps (attention relevance through every block) of a "
        "job's analyses, or of one analysis, that have none, and store them in the "
        "database. The model is loaded (POUNDCAM_WEIGHTS or --weights; it must be "
        "the analyses' model) and each image is read again from its submitted "
        "source: S3 (POUNDCAM_ALLOWED_BUCKETS) or a local path "
        "(POUNDCAM_ALLOWED_ROOTS); a source whose bytes differ from the analysed "
        "image is not explained. One line per analysis.",
    )
    p.add_argument("target", metavar="JOB|ANALYSIS", help="job id or analysis id (a number)")
    add_model_options(p, batch_and_threshold=False)
    p.add_argument("--again", action="store_true", help="compute them again where they are stored already")
    add_db_option(p)
    p.set_defaults(handler=_explain)


def _explain(args) -> int:
    from ..db import analyses_for_rendering, make_session_factory, session_scope, store_deep_maps
    from ..model.weights import with_local_weights

    settings = settings_for(args, **model_overrides(args))
    sessions = make_session_factory(settings.database_url)
    try:
        with session_scope(sessions) as s:
            records = analyses_for_rendering(s, args.target)
        todo = [r for r in records if args.again or r["deep_real_map"] is None]
        for rec in records:
            if rec not in todo:
                print(f"analysis {rec['analysis_id']}: deep maps stored before, kept")
        if not todo:
            return 0
        # the weights first: missing weights fail before PyTorch is loaded
        settings = with_local_weights(settings)
        from ..commands.render import Renderer
        from ..runtime import analysis_options, make_analyzer

        # the deep maps alone: the fast ones are stored already (one forward less per image)
        options = dataclasses.replace(
            analysis_options(settings), deep_maps=DeepMaps.ALL, render=False, fast_maps=False
        )
        analyzer = make_analyzer(settings, options=options)
        failed = 0
        try:
            by_id = {r["analysis_id"]: r for r in todo}
            for outcome in analyzer.analyze(_inputs(todo, analyzer, Renderer(settings))):
                aid = outcome.key
                if not outcome.ok:
                    failed += 1
                    print(
                        f"analysis {aid}: error: {outcome.error_code}: {one_line(outcome.error_message)}",
                        file=sys.stderr,
                    )
                    continue
                r = outcome.result
                assert r is not None  # outcome.ok
                if r.sha256 != by_id[aid]["sha256"] or r.deep_real_map is None:
                    failed += 1  # cannot happen: the bytes were checked and every image chosen
                    print(f"analysis {aid}: error: analysis_failed: no deep maps computed", file=sys.stderr)
                    continue
                with session_scope(sessions) as s:
                    store_deep_maps(s, aid, r.deep_real_map, r.deep_fake_map)
                grid = r.deep_real_map.shape[0]
                print(f"analysis {aid}: deep maps stored ({grid}x{grid}, P(fake) {r.p_fake:.3f})")
        finally:
            analyzer.close()
        return 1 if failed else 0
    finally:
        sessions.kw["bind"].dispose()


def _inputs(records: list[dict], analyzer, renderer):
    """``(analysis id, image bytes or the error that stops it)`` for the Analyzer."""
    from ..analysis import fast_config_id

    for r in records:
        aid = r["analysis_id"]
        if r["model_id"] != analyzer.model_id:
            yield (
                aid,
                ExplainError(
                    "model_mismatch",
                    f"analysed by model {r['model_id']}, the "
                    f"loaded model is {analyzer.model_id} (POUNDCAM_WEIGHTS)",
                ),
            )
            continue
        if fast_config_id(r["cam_config_id"]) != analyzer.cam.config_id:
            yield (
                aid,
                ExplainError(
                    "config_mismatch",
                    f"analysed with CAM configuration {r['cam_config_id']}, "
                    f"this one is {analyzer.cam.config_id} (POUNDCAM_CAM_LAYER, POUNDCAM_CAM_TARGET, "
                    "POUNDCAM_CAM_METHOD)",
                ),
            )
            continue
        try:
            yield aid, renderer.source(r)
        except PoundcamError as exc:
            yield aid, exc
