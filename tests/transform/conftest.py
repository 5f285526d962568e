"""Fixtures of the preprocessing tests: generated JPEGs (benchmarks/jpeg_corpus.py, shared with
the preprocessing benchmark) and the official fixture's PNGs as JPEG bytes."""

from __future__ import annotations

import pytest

from benchmarks import jpeg_corpus

# Small sizes keep the suite fast; they still cover landscape, portrait, square, upscaling and
# extreme aspect ratios.
TEST_SIZES = [
    (480, 270),
    (270, 480),
    (300, 300),
    (257, 256),
    (256, 331),
    (224, 224),
    (200, 150),
    (97, 61),
    (1000, 229),
    (37, 500),
]


@pytest.fixture(scope="session")
def corpus():
    return jpeg_corpus


@pytest.fixture(scope="session")
def varied_jpegs(corpus) -> list[tuple[str, bytes]]:
    return corpus.varied_jpegs(seed=1, sizes=TEST_SIZES)


@pytest.fixture(scope="session")
def fixture_jpegs(corpus, official_dir) -> list[tuple[str, bytes]]:
    """The fixture's PNGs as JPEGs (jpeg_corpus.fixture_jpegs)."""
    return corpus.fixture_jpegs(official_dir / "images")
