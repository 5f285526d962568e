"""Fixtures of the CAM tests: random tiny PoundNets from tests/conftest.py."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


def root_conftest():
    """tests/conftest.py as a module (its make_tiny_model is a plain function, not a fixture;
    importing it by the name ``conftest`` would be ambiguous between directories)."""
    name = "_poundcam_tests_root_conftest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "conftest.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


@pytest.fixture
def make_model():
    """``make_model(seed=0, **config_overrides)``: a random tiny PoundNet (tests/conftest.py)."""
    return root_conftest().make_tiny_model


@pytest.fixture(autouse=True)
def _one_cpu_thread():
    """Tiny models run fastest on one thread; on a busy machine several OpenMP threads spin
    against each other (50x slower here). Restored after each test."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
