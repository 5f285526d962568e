"""Fixtures of the preprocessing tests: generated JPEGs (benchmarks/jpeg_corpus.py, shared with
the preprocessing benchmark) and the official fixture's PNGs as JPEG bytes."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def jpeg_corpus():
    """benchmarks/jpeg_corpus.py as a module."""
    name = "_poundcam_jpeg_corpus"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "jpeg_corpus.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


# Small sizes keep the suite fast; they still cover landscape, portrait, square, upscaling and
# extreme aspect ratios.
TEST_SIZES = [(480, 270), (270, 480), (300, 300), (257, 256), (256, 331), (224, 224),
              (200, 150), (97, 61), (1000, 229), (37, 500)]


@pytest.fixture(scope="session")
def corpus():
    return jpeg_corpus()


@pytest.fixture(scope="session")
def varied_jpegs(corpus) -> list[tuple[str, bytes]]:
    return corpus.varied_jpegs(seed=1, sizes=TEST_SIZES)


@pytest.fixture(scope="session")
def fixture_jpegs(corpus, official_dir) -> list[tuple[str, bytes]]:
    """The fixture's PNGs as JPEGs (jpeg_corpus.fixture_jpegs)."""
    return corpus.fixture_jpegs(official_dir / "images")
