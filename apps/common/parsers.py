"""The request parser of every /v1 view: JSON that the API can store and answer about.

JSON may carry what neither PostgreSQL nor UTF-8 can hold: NUL characters (`"\\u0000"`, refused
in text and jsonb columns) and unpaired surrogates (`"\\ud800"`, which no UTF-8 encoder
writes). Either would fail at an insert, or in rendering an error message that quotes the
input, as a 500; and nesting deeper than Python's recursion limit fails inside the decoder.
Refused here, each is a 400 about the body instead. The nesting bound is MAX_DEPTH rather than
the recursion limit itself, so that the answer does not depend on how deep the call stack
already is: the lean submission (apps.common.apis.lean_view) parses with fewer frames below it
than a DRF view, and must refuse the same documents.
"""

import re
from collections.abc import Mapping
from typing import IO, Any, cast

from django.conf import settings
from django.http import HttpRequest
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# Far deeper than any request body the API takes, far shallower than the recursion limit.
MAX_DEPTH = 100
TOO_DEEP_MESSAGE = "JSON parse error - the document is nested too deeply"


def nests_deeper_than(value: Any, limit: int) -> bool:
    """Whether objects and arrays nest more than `limit` deep in `value`; walked without
    recursion."""
    pending = [(value, 1)] if isinstance(value, dict | list) else []
    while pending:
        item, depth = pending.pop()
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, dict | list):
                if depth == limit:
                    return True
                pending.append((child, depth + 1))
    return False


def has_unstorable_text(value: Any) -> bool:
    """Whether a string of `value` (a key too) holds NUL or an unpaired surrogate; walked without
    recursion."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if _UNSTORABLE.search(item) is not None:
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


class StorableJSONParser(JSONParser):
    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(TOO_DEEP_MESSAGE) from None
        if nests_deeper_than(data, MAX_DEPTH):
            raise ParseError(TOO_DEEP_MESSAGE)
        if has_unstorable_text(data):
            raise ParseError(
                "JSON strings must not contain NUL characters (\\u0000) or unpaired "
                "surrogates (\\ud800 to \\udfff)"
            )
        return data


def json_body_plain(request: HttpRequest) -> bool:
    """Whether a DRF view would read this request's body with StorableJSONParser: a Content-Type
    of application/json (DRF's parser selection takes any parameters) and a Content-Length
    (DRF reads a body without one as empty). What else a view makes of a body, 415 included,
    stays the view's to answer."""
    if request.content_type != "application/json":
        return False
    length = request.META.get("CONTENT_LENGTH", "")
    return length.isdigit() and int(length) > 0


def json_body_parse(request: HttpRequest) -> Any:
    """The body of a `json_body_plain` request as a DRF view's `request.data` reads it: the same
    parser on the same stream, decoded in the request's charset (DRF's default, UTF-8, without
    one); ParseError with DRF's words for a malformed body."""
    context = {"encoding": request.encoding or settings.DEFAULT_CHARSET}
    # The request itself is the stream, as DRF reads it (Request._load_stream): its file-like
    # read(), without the size check of `request.body` (RequestSizeLimitMiddleware's).
    stream = cast(IO[bytes], request)
    return StorableJSONParser().parse(stream, request.content_type, context)
