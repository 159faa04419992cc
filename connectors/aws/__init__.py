"""The aws connector: DynamoDB items and S3 objects through boto3, one cached client per configuration."""

from __future__ import annotations

from ._service import AwsService as AwsService

__all__ = ["AwsService"]
