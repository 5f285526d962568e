"""Build what a worker or the embedded CLI needs from Settings: the model, the analyzer,
the stores and the database sessions. Loaded once per process."""

from __future__ import annotations

import logging
import time

import torch

from .analysis import AnalysisOptions, Analyzer
from .constants import CompileMode, Device, HeatmapMode
from .db import make_session_factory
from .model import load_poundnet
from .model.weights import weights_for
from .pipeline import PipelineContext
from .preprocess.decode import DecodeLimits
from .settings import Settings
from .storage import make_store

log = logging.getLogger(__name__)


def pick_device(setting: str) -> torch.device:
    if setting == Device.AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == Device.CUDA and not torch.cuda.is_available():
        from .settings import SettingsError

        raise SettingsError("device cuda (POUNDCAM_DEVICE or --device) but no CUDA device is available")
    return torch.device(setting)


def load_model(settings: Settings, device: torch.device):
    path = weights_for(settings)
    log.info("loading model from %s on %s", path, device)
    t0 = time.monotonic()
    model = load_poundnet(path, device=device)
    for p in model.parameters():
        p.requires_grad_(False)  # inference only; the CAM starts its own graph
    log.info("loaded model %s (%.1f s)", model.model_id, time.monotonic() - t0)
    return model


def analysis_options(settings: Settings) -> AnalysisOptions:
    """The Analyzer's options that the settings give (docs/configuration.md)."""
    return AnalysisOptions(
        threshold=settings.threshold,
        cam_layer=settings.cam_layer,
        cam_target=settings.cam_target,
        cam_method=settings.cam_method,
        deep_maps=settings.deep_maps,
        batch_size=settings.batch_size,
        preprocess=settings.preprocess,
        compile=settings.compile == CompileMode.ON,
        jpeg_roundtrip=settings.jpeg_roundtrip,
        render=settings.heatmap != HeatmapMode.OFF,
        limits=DecodeLimits.from_settings(settings),
    )


def make_analyzer(
    settings: Settings,
    model=None,
    device: torch.device | None = None,
    options: AnalysisOptions | None = None,
) -> Analyzer:
    """The Analyzer of these settings (``options``: given instead of ``analysis_options(settings)``).

    Raises:
        SettingsError: the CAM settings do not fit the model (a block it does not have).
    """
    device = device or pick_device(settings.device)
    model = model or load_model(settings, device)
    try:
        return Analyzer(model, options or analysis_options(settings), device=device)
    except ValueError as exc:
        from .errors import PoundcamError
        from .settings import SettingsError

        if isinstance(exc, PoundcamError):  # says what is wrong already
            raise
        raise SettingsError(
            f"the CAM settings do not fit model {model.model_id}: {exc} "
            "(POUNDCAM_CAM_LAYER, POUNDCAM_CAM_METHOD, POUNDCAM_CAM_TARGET)"
        ) from None


def make_context(settings: Settings, analyzer: Analyzer, observer=None, s3_client=None) -> PipelineContext:
    """One store reads the images and writes the heatmaps. On S3 the heatmap bucket is needed
    unless the heatmap is off (POUNDCAM_HEATMAP=off: the maps go only to the database)."""
    if not settings.embedded and not settings.heatmap_bucket and settings.heatmap != HeatmapMode.OFF:
        from .settings import SettingsError

        raise SettingsError("POUNDCAM_HEATMAP_BUCKET must be set for S3 storage")
    source = sink = make_store(settings, client=s3_client)
    return PipelineContext(
        analyzer=analyzer,
        source=source,
        sink=sink,
        sessions=make_session_factory(settings.database_url),
        heatmap_prefix=settings.heatmap_prefix,
        max_image_bytes=settings.max_image_bytes,
        observer=observer,
    )
