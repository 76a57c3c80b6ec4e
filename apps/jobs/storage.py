"""Where job outputs live: S3 (any S3-compatible store) in production, local disk by default.

Both backends take keys of the form `accounts/<account>/jobs/<job>/<file>`; the API checks
ownership before it ever builds a key, so a tenant can only reach its own objects.
"""

import shutil
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import BinaryIO, Protocol

from django.conf import settings


class Storage(Protocol):
    """Backends raise FileNotFoundError from `open` when a key holds nothing."""

    def put_file(self, key: str, path: Path, content_type: str) -> None: ...
    def open(self, key: str) -> BinaryIO: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str) -> list[str]: ...
    def delete_prefix(self, prefix: str) -> None: ...
    def presigned_url(self, key: str, filename: str) -> str | None: ...


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"storage key escapes the storage root: {key}")
        return path

    def put_file(self, key: str, path: Path, content_type: str) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)

    def open(self, key: str) -> BinaryIO:
        return self._path(key).open("rb")

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(
            str(path.relative_to(self.root.resolve())) for path in base.rglob("*") if path.is_file()
        )

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self._path(prefix), ignore_errors=True)

    def presigned_url(self, key: str, filename: str) -> str | None:
        return None


class S3Storage:
    def __init__(
        self,
        *,
        bucket: str,
        prefix: str,
        endpoint_url: str | None,
        region: str | None,
        presign_seconds: int,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.presign_seconds = presign_seconds
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url or None,
            region_name=region or None,
            config=Config(signature_version="s3v4", retries={"max_attempts": 3}),
        )

    def _key(self, key: str) -> str:
        return self.prefix + key

    def put_file(self, key: str, path: Path, content_type: str) -> None:
        self.client.upload_file(
            str(path), self.bucket, self._key(key), ExtraArgs={"ContentType": content_type}
        )

    def open(self, key: str) -> BinaryIO:
        """Raises FileNotFoundError for a missing object, like LocalStorage."""
        from botocore.exceptions import ClientError

        try:
            body: BinaryIO = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            return body
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                raise FileNotFoundError(key) from None
            raise

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError:
            return False
        return True

    def _iter_keys(self, prefix: str) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
            for item in page.get("Contents", []):
                yield item["Key"][len(self.prefix) :]

    def list(self, prefix: str) -> list[str]:
        return sorted(self._iter_keys(prefix))

    def delete_prefix(self, prefix: str) -> None:
        keys = [{"Key": self._key(key)} for key in self._iter_keys(prefix)]
        for start in range(0, len(keys), 1000):
            self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": keys[start : start + 1000]}
            )

    def presigned_url(self, key: str, filename: str) -> str | None:
        url: str = self.client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": self._key(key),
                "ResponseContentDisposition": f'attachment; filename="{filename}"',
            },
            ExpiresIn=self.presign_seconds,
        )
        return url


@cache
def get_storage() -> Storage:
    if settings.PHONOS_S3_BUCKET:
        return S3Storage(
            bucket=settings.PHONOS_S3_BUCKET,
            prefix=settings.PHONOS_S3_PREFIX,
            endpoint_url=settings.PHONOS_S3_ENDPOINT_URL,
            region=settings.PHONOS_S3_REGION,
            presign_seconds=settings.PHONOS_S3_PRESIGN_SECONDS,
        )
    return LocalStorage(settings.PHONOS_STORAGE_DIR)
