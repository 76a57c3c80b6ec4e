"""Limit/offset paging shared by every list endpoint (`/v1/jobs`, `/v1/billing/ledger`)."""

from typing import Any, TypeVar

from django.db.models import Model, QuerySet
from rest_framework import serializers

_M = TypeVar("_M", bound=Model)


class PageQuerySerializer(serializers.Serializer[Any]):
    """Subclass it to add a list's own filters."""

    limit = serializers.IntegerField(min_value=1, max_value=100, default=50)
    # Bounded so the SQL OFFSET stays a valid bigint; no account has that many rows.
    offset = serializers.IntegerField(min_value=0, max_value=1_000_000_000, default=0)


class PaginationSerializer(serializers.Serializer[Any]):
    total = serializers.IntegerField()
    limit = serializers.IntegerField()
    offset = serializers.IntegerField()
    has_more = serializers.BooleanField()


def paginate(
    queryset: QuerySet[_M], *, limit: int, offset: int
) -> tuple[QuerySet[_M], dict[str, Any]]:
    """One page of `queryset` and the `pagination` object that describes it."""
    total = queryset.count()
    return queryset[offset : offset + limit], page_description(
        total=total, limit=limit, offset=offset
    )


def page_description(*, total: int, limit: int, offset: int) -> dict[str, Any]:
    """The `pagination` object of a page."""
    return {"total": total, "limit": limit, "offset": offset, "has_more": offset + limit < total}
