"""The request parser of every /v1 view: JSON that the API can store and answer about.

JSON may carry what neither PostgreSQL nor UTF-8 can hold: NUL characters (`"\\u0000"`, refused
in text and jsonb columns) and unpaired surrogates (`"\\ud800"`, which no UTF-8 encoder
writes). Either would fail at an insert, or in rendering an error message that quotes the
input, as a 500; and nesting deeper than Python's recursion limit fails inside the decoder.
Refused here, each is a 400 about the body instead.
"""

import re
from collections.abc import Mapping
from typing import IO, Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def has_unstorable_text(value: Any) -> bool:
    if isinstance(value, str):
        return _UNSTORABLE.search(value) is not None
    if isinstance(value, dict):
        return any(
            has_unstorable_text(key) or has_unstorable_text(item) for key, item in value.items()
        )
    if isinstance(value, list):
        return any(has_unstorable_text(item) for item in value)
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
            unstorable = has_unstorable_text(data)
        except RecursionError:
            raise ParseError("JSON parse error - the document is nested too deeply") from None
        if unstorable:
            raise ParseError(
                "JSON strings must not contain NUL characters (\\u0000) or unpaired "
                "surrogates (\\ud800 to \\udfff)"
            )
        return data
