"""Object storage (the S3 API): where `hubget download --to s3://` stages repos and
`hubget serve --store s3://` serves them from.

- ``s3``: one bucket behind the calls hubget makes (boto3), ``s3://`` URLs, typed errors;
- ``manifest``: ``PREFIX/.hubget/manifest.json``, what a staged repo holds;
- ``upload``: remote files streamed into objects (ranged GETs in, multipart uploads out, hashed in order);
- ``resume``: the record that lets an interrupted multipart upload go on.

Imports base modules and ``transfer`` only.
"""

from __future__ import annotations

from hubget.objectstore.s3 import S3Bucket, S3Url, is_s3_url, parse_s3_url

__all__ = ["S3Bucket", "S3Url", "is_s3_url", "parse_s3_url"]
