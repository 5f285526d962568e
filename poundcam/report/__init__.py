"""The HTML review report of a job: one self-contained page of results and evidence maps."""
from .build import build_report

__all__ = ["build_report"]
