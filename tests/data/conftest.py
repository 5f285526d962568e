"""Fixtures of the data-layer tests: a database URL on both backends, migrated or not."""

from __future__ import annotations

import pytest


@pytest.fixture
def db(db_url):
    """A session factory on a database migrated to head; engines are disposed after."""
    from poundcam.db import make_engine, make_session_factory
    from poundcam.db.migrate import upgrade

    upgrade(db_url)
    engine = make_engine(db_url)
    yield make_session_factory(engine)
    engine.dispose()
