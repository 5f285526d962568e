"""The boto3 S3 client every part of poundcam uses: standard retry mode, optional endpoint."""

from __future__ import annotations


def make_s3_client(endpoint_url: str | None = None, max_attempts: int = 5):
    """A boto3 S3 client for ``endpoint_url`` (``Settings.s3_endpoint_url``; None: AWS).
    Credentials come from boto3's own chain (the ``AWS_*`` variables, profiles, roles)."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=10,
        read_timeout=60,
        max_pool_connections=32,
    )
    return boto3.client("s3", endpoint_url=endpoint_url, config=config)
