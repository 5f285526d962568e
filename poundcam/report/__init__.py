"""The HTML review report of a job: one self-contained page of results and evidence maps.

``data`` selects the items and decides each item's pictures (``item_images``), ``images``
reads and shrinks them, ``build`` renders the page from the Jinja2 templates in templates/.
"""

from .build import build_report
from .data import SORTS, item_images, select_rows
from .images import EmbeddedImages, LinkedImages, ThumbnailSpec

__all__ = [
    "SORTS",
    "EmbeddedImages",
    "LinkedImages",
    "ThumbnailSpec",
    "build_report",
    "item_images",
    "select_rows",
]
