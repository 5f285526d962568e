"""Fixtures of the CAM tests: random tiny PoundNets from tests/conftest.py."""

from __future__ import annotations

import pytest


@pytest.fixture
def make_model(tiny_model_factory):
    """``make_model(seed=0, **config_overrides)``: a random tiny PoundNet (tests/conftest.py)."""
    return tiny_model_factory
