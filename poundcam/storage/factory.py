"""The one place object stores are made: from the settings, and the changes a caller needs."""

from __future__ import annotations

from .stores import LocalStore, ObjectStore, S3Store


def make_store(settings, client=None, **changes) -> ObjectStore:
    """The store ``settings`` describe, with ``changes`` (settings fields) applied first.

    In the embedded mode (``local_root`` set) a local folder: heatmaps written under
    ``local_root``, images read from under ``allowed_roots`` (none: the folder itself). Else
    S3 at ``s3_endpoint_url``: heatmaps written to ``heatmap_bucket`` (None: the store
    writes nothing), images read from ``allowed_buckets``. A command that reads from another
    place names it, e.g. ``make_store(settings, allowed_buckets=(settings.heatmap_bucket,))``
    reads the heatmaps, ``make_store(settings, local_root=None, heatmap_bucket=None)`` reads
    images from S3 and writes nothing.

    Args:
        settings: a :class:`poundcam.settings.Settings`.
        client: the boto3 S3 client (default: a new one for ``s3_endpoint_url``).
        **changes: settings fields to change for this store (checked as settings are).
    """
    if changes:
        settings = settings.replace(**changes)
    if settings.embedded:
        return LocalStore(settings.local_root, settings.allowed_roots)
    return S3Store(
        settings.heatmap_bucket,
        settings.allowed_buckets,
        client=client,
        endpoint_url=settings.s3_endpoint_url,
    )
