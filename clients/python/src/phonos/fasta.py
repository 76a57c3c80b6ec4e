"""FASTA reading for the command line: records with their names, in file order."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Record:
    name: str
    sequence: str


def read_fasta(text: str, default_name: str = "sequence") -> list[Record]:
    """Records of a FASTA text; a text without a header is one record named `default_name`."""
    records: list[Record] = []
    name: str | None = None
    lines: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(";"):
            continue
        if line.startswith(">"):
            if name is not None or lines:
                records.append(Record(name or default_name, "".join(lines)))
            name, lines = line[1:].split()[0] if line[1:].split() else default_name, []
        else:
            lines.append(re.sub(r"\s+", "", line))
    if name is not None or lines:
        records.append(Record(name or default_name, "".join(lines)))
    return [record for record in records if record.sequence]


def safe_filename(name: str) -> str:
    """A file name from a record name: no directories, nothing a shell or filesystem trips on."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return cleaned[:100] or "structure"
