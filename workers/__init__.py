"""Celery workers for poundcam: one process per GPU, solo pool."""
