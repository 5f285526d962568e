"""The two profiles of the evaluation: "full" (the reported numbers) and "quick" (the test's),
each for either planted artifact (``profile_for``)."""

from __future__ import annotations

import dataclasses

from poundcam.model import PoundNetConfig

from .data import ARTIFACTS, DataSettings
from .train import TrainSettings, detector_config


@dataclasses.dataclass(frozen=True)
class Profile:
    name: str
    model: PoundNetConfig
    data: DataSettings
    train: TrainSettings
    seed: int = 0
    n_eval: int = 512  # held-out images for accuracy (half fake)
    n_localize: int = 256  # held-out fakes for the localization metrics
    n_curves: int = 64  # of those, the ones used for deletion/insertion curves
    n_sanity: int = 32  # of those, the ones used for the sanity checks
    n_examples: int = 4  # rows of the example-overlay figure
    n_select: int = 32  # fakes of the separate split that picks the explained layer


PROFILES = {
    "full": Profile("full", detector_config(96, 4), DataSettings(), TrainSettings(pool=2048, steps=400)),
    "quick": Profile(
        "quick",
        detector_config(64, 3),
        DataSettings(),
        TrainSettings(pool=1024, steps=250, eval_images=128),
        n_eval=128,
        n_localize=48,
        n_curves=16,
        n_sanity=12,
        n_examples=3,
        n_select=16,
    ),
}


def profile_for(name: str, artifact: str = ARTIFACTS[0]) -> Profile:
    """Profile ``name`` with the planted ``artifact``; named ``<name>-<artifact>`` for any but
    the first artifact (its output folder and the detector's cache key differ with it)."""
    base = PROFILES[name]
    if artifact == base.data.artifact:
        return base
    return dataclasses.replace(
        base, name=f"{name}-{artifact}", data=dataclasses.replace(base.data, artifact=artifact)
    )
