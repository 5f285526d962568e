"""Alembic migrations of the poundcam database (see poundcam.db.migrate and
``poundcam db upgrade``). A package so that an installed poundcam can find them."""

from pathlib import Path

LOCATION = Path(__file__).resolve().parent
