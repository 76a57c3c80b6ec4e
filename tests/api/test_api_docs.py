"""docs/api.md lists every status code of every operation exactly as the OpenAPI schema does."""

import re
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.django_db

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
TABLE = re.compile(r"<!-- status-table:start -->\n(.*?)<!-- status-table:end -->", re.S)


def status_table(document: dict) -> str:
    rows = ["| endpoint | statuses |", "|---|---|"]
    for path, operations in sorted(document["paths"].items()):
        for method, operation in sorted(operations.items()):
            statuses = ", ".join(sorted(operation["responses"]))
            rows.append(f"| `{method.upper()} {path}` | {statuses} |")
    return "\n".join(rows) + "\n"


def test_the_status_table_is_the_schemas(live_server):
    document = requests.get(f"{live_server.url}/v1/openapi.json", timeout=30).json()
    documented = TABLE.search(DOC.read_text())
    assert documented is not None, "docs/api.md lost its status-table markers"
    expected = status_table(document)
    assert documented.group(1) == expected, f"docs/api.md's status table should read:\n{expected}"
