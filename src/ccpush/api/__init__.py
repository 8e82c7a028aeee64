"""The HTTP API: voice applications, call-record ingestion and delivery status."""

from ccpush.api.app import create_api

__all__ = ["create_api"]
