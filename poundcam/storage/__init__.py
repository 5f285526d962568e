"""Object stores: S3 through boto3 (s3) and a local folder standing in for it (stores), object
keys and URI allow-lists, and the one store factory (factory: make_store)."""

from .factory import make_store
from .stores import (
    LocalStore,
    ObjectStore,
    S3Ref,
    S3Store,
    StorageError,
    heatmap_key,
    parse_s3_uri,
    validate_key,
)

__all__ = [
    "LocalStore",
    "ObjectStore",
    "S3Ref",
    "S3Store",
    "StorageError",
    "heatmap_key",
    "make_store",
    "parse_s3_uri",
    "validate_key",
]
