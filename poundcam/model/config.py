"""PoundNet run configuration: the settings that tensor shapes cannot tell (class names)
plus the prompt settings, which are cross-checked against the shapes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ..errors import CheckpointError

RELEASED_CLASS_NAMES: tuple[str, ...] = (
    "airplane",
    "bird",
    "bottle",
    "car",
    "chair",
    "diningtable",
    "horse",
    "person",
    "sheep",
    "train",
    "bicycle",
    "boat",
    "bus",
    "cat",
    "cow",
    "dog",
    "motorbike",
    "pottedplant",
    "sofa",
    "tvmonitor",
)


@dataclasses.dataclass(frozen=True)
class PoundNetConfig:
    """Architecture and prompt settings of one PoundNet.

    Widths, depths and counts are normally inferred from a checkpoint's tensor shapes
    (see ``checkpoint.infer_config``); only ``class_names`` must come from the run's config.
    """

    vision_width: int = 1024
    vision_layers: int = 24
    patch_size: int = 14
    grid_size: int = 16
    embed_dim: int = 768
    text_width: int = 768
    text_layers: int = 12
    context_length: int = 77
    n_ctx_vision: int = 16
    n_ctx_text: int = 16
    prompt_depth_vision: int = 8
    prompt_depth_text: int = 8
    prompt_num_text: int = 1
    class_names: tuple[str, ...] = RELEASED_CLASS_NAMES

    @property
    def vision_heads(self) -> int:
        return max(1, self.vision_width // 64)

    @property
    def text_heads(self) -> int:
        return max(1, self.text_width // 64)

    @property
    def image_size(self) -> int:
        return self.patch_size * self.grid_size

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PoundNetConfig:
        data = json.loads(text)
        data["class_names"] = tuple(data["class_names"])
        return cls(**data)


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """What a run's config.yaml says; None where it is silent."""

    class_names: tuple[str, ...] | None = None
    n_ctx_vision: int | None = None
    n_ctx_text: int | None = None
    prompt_depth_vision: int | None = None
    prompt_depth_text: int | None = None
    prompt_num_text: int | None = None


_MODEL_KEYS = {
    "N_CTX_VISION": "n_ctx_vision",
    "N_CTX_TEXT": "n_ctx_text",
    "PROMPT_DEPTH_VISION": "prompt_depth_vision",
    "PROMPT_DEPTH_TEXT": "prompt_depth_text",
    "PROMPT_NUM_TEXT": "prompt_num_text",
}


def read_run_config(path: str | Path) -> RunSettings:
    """Read a run's config.yaml (the official training config)."""
    import yaml

    path = Path(path)
    try:
        data: Any = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: config file not found") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not a readable YAML config: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a mapping at the top level")
    model = data.get("model") or {}
    values: dict[str, Any] = {}
    for yaml_key, field in _MODEL_KEYS.items():
        if yaml_key in model:
            try:
                values[field] = int(model[yaml_key])
            except (TypeError, ValueError):
                raise CheckpointError(f"{path}: model.{yaml_key} must be an integer") from None
    train = (data.get("datasets") or {}).get("train") or {}
    # The official configs spell the key "multicalss_names"; accept the correct spelling too.
    names = train.get("multicalss_names", train.get("multiclass_names"))
    if names is not None:
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise CheckpointError(f"{path}: datasets.train.multicalss_names must be a list of names")
        values["class_names"] = tuple(names)
    return RunSettings(**values)
