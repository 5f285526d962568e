"""Object stores: S3 through boto3 (s3) and a local folder standing in for it (stores), object
keys and URI allow-lists, and the store factory."""
from .stores import (ACCESS_DENIED, INVALID_KEY, INVALID_URI, NOT_FOUND, STORAGE_ERROR,
                     STORAGE_UNAVAILABLE, TOO_LARGE, URI_NOT_ALLOWED, LocalStore, ObjectStore, S3Ref,
                     S3Store, StorageError, heatmap_key, make_store, parse_s3_uri, validate_key)

__all__ = ["ACCESS_DENIED", "INVALID_KEY", "INVALID_URI", "NOT_FOUND", "STORAGE_ERROR",
           "STORAGE_UNAVAILABLE", "TOO_LARGE", "URI_NOT_ALLOWED", "LocalStore", "ObjectStore", "S3Ref",
           "S3Store", "StorageError", "heatmap_key", "make_store", "parse_s3_uri", "validate_key"]
