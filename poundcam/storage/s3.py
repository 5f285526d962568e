"""The boto3 S3 client every part of poundcam uses: standard retry mode, optional endpoint."""
from __future__ import annotations

import os


def make_s3_client(endpoint_url: str | None = None, max_attempts: int = 5):
    import boto3
    from botocore.config import Config

    endpoint_url = endpoint_url or os.environ.get("POUNDCAM_S3_ENDPOINT_URL") or None
    config = Config(retries={"mode": "standard", "max_attempts": max_attempts},
                    connect_timeout=10, read_timeout=60, max_pool_connections=32)
    return boto3.client("s3", endpoint_url=endpoint_url, config=config)
