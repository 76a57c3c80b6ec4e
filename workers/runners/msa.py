"""Multiple sequence alignments from a ColabFold MMseqs2 server, cached on disk by sequence.

The server protocol is the one `colabfold.colabfold.run_mmseqs2` speaks: POST `/ticket/msa`
with the query as FASTA and a search mode, poll `GET /ticket/{id}` until the status is
COMPLETE, then `GET /result/download/{id}`: a tar.gz holding one a3m per searched database
(`uniref.a3m`, and `bfd.mgnify30.metaeuk30.smag30.a3m` in the `env` mode). The public server
is shared and rate-limited, so every MSA is cached under the hash of its sequence and mode and
a sequence is searched once per cache directory.

Templates come the way ColabFold's `run_mmseqs2(use_templates=True)` gets them: the same
result archive holds `pdb70.m8`, the server's template search (MMseqs2 hits against PDB70),
and `GET /template/{id,id,...}` returns a tar.gz with the mmCIF files of those hits. Both are
cached next to the MSA, under the same key.
"""

from __future__ import annotations

import io
import logging
import os
import random
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from apps.jobs.job_keys import MSA_MODE, msa_cache_path
from workers.runners.base import RunnerError

logger = logging.getLogger(__name__)

DEFAULT_MSA_SERVER_URL = "https://api.colabfold.com"
# ColabFold's default search: UniRef30 plus the environmental databases, filtered.
DEFAULT_MODE = MSA_MODE
# The a3m files a result archive holds per mode, in the order ColabFold concatenates them.
_A3M_FILES = {
    "env": ("uniref.a3m", "bfd.mgnify30.metaeuk30.smag30.a3m"),
    "all": ("uniref.a3m",),
}
# ColabFold numbers the queries of one submission from 101; a job submits one sequence.
_QUERY_ID = 101
_WAITING_STATUSES = {"UNKNOWN", "PENDING", "RUNNING"}
_RATE_LIMIT_STATUS = "RATELIMIT"
# Connect timeouts slightly above a multiple of 3 s (TCP's SYN retries), as ColabFold's client
# uses; the caller's settings override them.
DEFAULT_CONNECT_TIMEOUT_S = 9.02
DEFAULT_READ_TIMEOUT_S = 30.02
_TEMPLATE_HITS_FILE = "pdb70.m8"
# ColabFold asks the template server for the mmCIF files of at most this many hits.
MAX_TEMPLATE_HITS = 20
# Only `<pdb id>.cif` members of a template archive are kept (names from the network).
_TEMPLATE_FILE = re.compile(r"[0-9a-z]{4}\.cif")
_TEMPLATE_HIT_NAME = re.compile(r"[0-9A-Za-z]{4}_[0-9A-Za-z.]+")


@dataclass(frozen=True)
class TemplateHit:
    """One row of the server's pdb70.m8 (BLAST tabular: 1-based inclusive ranges)."""

    name: str  # PDB id and chain, "1abc_A"
    identity: float
    query_start: int
    query_end: int
    target_start: int
    target_end: int
    evalue: float
    bits: float

    @property
    def pdb_id(self) -> str:
        return self.name.split("_", 1)[0].lower()

    @property
    def chain(self) -> str:
        return self.name.split("_", 1)[1]


@dataclass(frozen=True)
class TemplateSearch:
    hits: list[TemplateHit]  # best first, at most MAX_TEMPLATE_HITS
    mmcif_dir: Path | None  # `<pdb id>.cif` for the hits; None when there are no hits
    cached: bool  # hits and files both came from the cache: no request was made


class MsaClient:
    def __init__(
        self,
        *,
        server_url: str = DEFAULT_MSA_SERVER_URL,
        cache_dir: Path | None = None,
        mode: str = DEFAULT_MODE,
        user_agent: str = "phonos",
        poll_interval_s: float = 5.0,
        max_backoff_s: float = 120.0,
        max_wait_s: float = 3600.0,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if mode not in _A3M_FILES:
            raise ValueError(f"unknown MSA mode {mode!r}; known: {', '.join(_A3M_FILES)}")
        self.server_url = server_url.rstrip("/")
        self.cache_dir = cache_dir
        self.mode = mode
        self.poll_interval_s = poll_interval_s
        self.max_backoff_s = max_backoff_s
        # The whole search (submit, polls, download, retries) ends by this many seconds.
        self.max_wait_s = max_wait_s
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self._sleep = sleep
        self._session = requests.Session()
        # The public server asks every client to say who it is.
        self._session.headers["User-Agent"] = user_agent

    def cache_path(self, sequence: str) -> Path | None:
        if self.cache_dir is None:
            return None
        # One key scheme, shared with the API's /v1/cache/check (apps.jobs.job_keys).
        return msa_cache_path(self.cache_dir, sequence, self.mode)

    def _cache_entry(self, sequence: str, suffix: str) -> Path | None:
        path = self.cache_path(sequence)
        return None if path is None else path.with_suffix(suffix)

    def fetch(self, sequence: str) -> tuple[str, bool]:
        """The a3m for `sequence` (query first) and whether it came from the cache."""
        a3m, _, cached = self._fetch(sequence, need_hits=False)
        return a3m, cached

    def fetch_with_templates(
        self, sequence: str, *, scratch_dir: Path
    ) -> tuple[str, bool, TemplateSearch]:
        """The a3m, whether it was cached, and the template hits with their mmCIF files.

        Without a cache directory the files go to `scratch_dir` (the job's own folder).
        """
        a3m, m8, msa_cached = self._fetch(sequence, need_hits=True)
        assert m8 is not None
        hits = _parse_template_hits(m8)[:MAX_TEMPLATE_HITS]
        if not hits:
            return a3m, msa_cached, TemplateSearch(hits=[], mmcif_dir=None, cached=msa_cached)
        mmcif_dir = self._cache_entry(sequence, ".templates") or scratch_dir / "templates"
        files_cached = mmcif_dir.is_dir()
        if not files_cached:
            self._download_templates(hits, mmcif_dir)
        return (
            a3m,
            msa_cached,
            TemplateSearch(hits=hits, mmcif_dir=mmcif_dir, cached=msa_cached and files_cached),
        )

    def _fetch(self, sequence: str, *, need_hits: bool) -> tuple[str, str | None, bool]:
        a3m_path = self.cache_path(sequence)
        hits_path = self._cache_entry(sequence, ".m8")
        if a3m_path is not None and hits_path is not None and a3m_path.is_file():
            if hits_path.is_file():
                return a3m_path.read_text(), hits_path.read_text(), True
            if not need_hits:  # cached before templates were kept
                return a3m_path.read_text(), None, True
        a3m, m8 = self._search(sequence)
        if need_hits and m8 is None:
            raise RunnerError(
                f"the MSA server at {self.server_url} returned no template search "
                f"({_TEMPLATE_HITS_FILE}); use_templates needs a ColabFold MMseqs2 server "
                "with the PDB70 template database"
            )
        if a3m_path is not None and hits_path is not None:
            # The hits first: a cached a3m then always has them beside it.
            if m8 is not None:
                _write_atomically(hits_path, m8)
            _write_atomically(a3m_path, a3m)
        return a3m, m8, False

    def _download_templates(self, hits: list[TemplateHit], mmcif_dir: Path) -> None:
        """GET /template/<names>, as ColabFold does; keep the archive's mmCIF files."""
        names = ",".join(hit.name for hit in hits)
        deadline = time.monotonic() + self.max_wait_s
        archive = self._request("GET", f"/template/{names}", deadline)
        mmcif_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=mmcif_dir.parent, prefix=".tmp-templates-"))
        try:
            _extract_template_files(archive.content, staging)
            try:
                # Atomic: concurrent workers each fill their own folder; the first rename wins.
                staging.rename(mmcif_dir)
            except OSError:
                if not mmcif_dir.is_dir():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _search(self, sequence: str) -> tuple[str, str | None]:
        deadline = time.monotonic() + self.max_wait_s
        ticket = self._submit(sequence, deadline)
        ticket_id = ticket["id"]
        attempt = 0
        while ticket["status"] in _WAITING_STATUSES or ticket["status"] == _RATE_LIMIT_STATUS:
            if ticket["status"] == _RATE_LIMIT_STATUS:
                attempt += 1
                self._wait(self._backoff(attempt), deadline)
            else:
                self._wait(self.poll_interval_s, deadline)
            ticket = self._get_json(f"/ticket/{ticket_id}", deadline)
        if ticket["status"] != "COMPLETE":
            raise RunnerError(_status_message(ticket["status"]))
        archive = self._request("GET", f"/result/download/{ticket_id}", deadline)
        return _a3m_from_archive(archive.content, self.mode)

    def _submit(self, sequence: str, deadline: float) -> dict[str, Any]:
        attempt = 0
        while True:
            ticket = self._get_json(
                "/ticket/msa",
                deadline,
                method="POST",
                data={"q": f">{_QUERY_ID}\n{sequence}\n", "mode": self.mode},
            )
            if ticket["status"] not in {"UNKNOWN", _RATE_LIMIT_STATUS}:
                break
            attempt += 1
            self._wait(self._backoff(attempt), deadline)
        if ticket["status"] in _WAITING_STATUSES or ticket["status"] == "COMPLETE":
            if "id" not in ticket:
                raise RunnerError("the MSA server accepted the query but returned no ticket id")
            return ticket
        raise RunnerError(_status_message(ticket["status"]))

    def _get_json(
        self, path: str, deadline: float, *, method: str = "GET", data: dict[str, str] | None = None
    ) -> dict[str, Any]:
        response = self._request(method, path, deadline, data=data)
        try:
            body = response.json()
        except ValueError:
            raise RunnerError(
                f"the MSA server answered {path} with something other than JSON"
            ) from None
        if not isinstance(body, dict) or not isinstance(body.get("status"), str):
            raise RunnerError(f"the MSA server answered {path} without a status")
        return body

    def _request(
        self, method: str, path: str, deadline: float, *, data: dict[str, str] | None = None
    ) -> requests.Response:
        """One HTTP exchange, retried with backoff on 429, 5xx and connection errors."""
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._deadline_error()
            try:
                # No single exchange may outlive the search's deadline.
                response = self._session.request(
                    method,
                    self.server_url + path,
                    data=data,
                    timeout=(
                        min(self.connect_timeout_s, remaining),
                        min(self.read_timeout_s, remaining),
                    ),
                )
            except requests.RequestException as error:
                logger.warning("MSA server request %s %s failed: %s", method, path, error)
                self._wait(self._backoff(attempt), deadline)
                continue
            if response.status_code == 429 or response.status_code >= 500:
                retry_after = _retry_after_seconds(response)
                logger.warning(
                    "MSA server answered %s %s with %s", method, path, response.status_code
                )
                self._wait(self._backoff(attempt) if retry_after is None else retry_after, deadline)
                continue
            if response.status_code >= 400:
                raise RunnerError(
                    f"the MSA server at {self.server_url} refused {path} "
                    f"(HTTP {response.status_code})"
                )
            return response

    def _backoff(self, attempt: int) -> float:
        # Exponential with jitter, so that workers rate-limited together do not retry together.
        base = min(self.poll_interval_s * 2 ** (attempt - 1), self.max_backoff_s)
        return base * random.uniform(1.0, 1.5)

    def _wait(self, seconds: float, deadline: float) -> None:
        if time.monotonic() + seconds > deadline:
            raise self._deadline_error()
        self._sleep(seconds)

    def _deadline_error(self) -> RunnerError:
        return RunnerError(
            f"the MSA server at {self.server_url} did not return an alignment within "
            f"{self.max_wait_s:.0f} s; try again later or use msa_mode 'a3m'"
        )


def _status_message(status: str) -> str:
    if status == "MAINTENANCE":
        return "the MSA server is down for maintenance; try again in a few minutes"
    return (
        f"the MSA server could not align this sequence (status {status}); "
        "check the sequence or use msa_mode 'a3m'"
    )


def _retry_after_seconds(response: requests.Response) -> float | None:
    try:
        return max(float(response.headers["Retry-After"]), 0.0)
    except (KeyError, ValueError):
        return None


def _a3m_from_archive(content: bytes, mode: str) -> tuple[str, str | None]:
    """The query's alignment (its records from each database's a3m, as ColabFold joins them)
    and the template search's pdb70.m8, when the archive has one."""
    try:
        with tarfile.open(fileobj=io.BytesIO(content), mode="r:gz") as archive:
            members = {member.name.rsplit("/", 1)[-1]: member for member in archive.getmembers()}
            parts = []
            for file_name in _A3M_FILES[mode]:
                member = members.get(file_name)
                extracted = archive.extractfile(member) if member is not None else None
                if extracted is None:
                    raise RunnerError(f"the MSA server's result has no {file_name}")
                parts.append(extracted.read().decode())
            hits_member = members.get(_TEMPLATE_HITS_FILE)
            hits_file = archive.extractfile(hits_member) if hits_member is not None else None
            m8 = hits_file.read().decode() if hits_file is not None else None
    except (tarfile.TarError, EOFError, OSError) as error:
        raise RunnerError(f"the MSA server's result is not a readable tar.gz ({error})") from None
    # Each a3m holds the queries of a submission one after another, separated by NUL bytes.
    return "".join(part.replace("\x00", "") for part in parts), m8


def _parse_template_hits(m8: str) -> list[TemplateHit]:
    """The job's query (ColabFold's id 101) rows of pdb70.m8, in the server's order (best first)."""
    hits = []
    for line in m8.splitlines():
        fields = line.split()
        if not fields or fields[0] != str(_QUERY_ID):
            continue
        try:
            if len(fields) < 12 or not _TEMPLATE_HIT_NAME.fullmatch(fields[1]):
                raise ValueError(fields[1] if len(fields) > 1 else line)
            hits.append(
                TemplateHit(
                    name=fields[1],
                    identity=float(fields[2]),
                    query_start=int(fields[6]),
                    query_end=int(fields[7]),
                    target_start=int(fields[8]),
                    target_end=int(fields[9]),
                    evalue=float(fields[10]),
                    bits=float(fields[11]),
                )
            )
        except ValueError:
            raise RunnerError(
                f"the MSA server's {_TEMPLATE_HITS_FILE} has an unreadable line: {line[:200]!r}"
            ) from None
    return hits


def _extract_template_files(content: bytes, target: Path) -> None:
    # The archive also holds ColabFold's pdb70 a3m/hhm ffindex files, used by its local
    # hhsearch; only the structures are needed here (see workers/runners/alphafold2.py).
    try:
        with tarfile.open(fileobj=io.BytesIO(content), mode="r:gz") as archive:
            for member in archive.getmembers():
                name = member.name.rsplit("/", 1)[-1]
                if not member.isfile() or not _TEMPLATE_FILE.fullmatch(name):
                    continue
                extracted = archive.extractfile(member)
                if extracted is not None:
                    (target / name).write_bytes(extracted.read())
    except (tarfile.TarError, EOFError, OSError) as error:
        raise RunnerError(
            f"the MSA server's template files are not a readable tar.gz ({error})"
        ) from None


def _write_atomically(path: Path, text: str) -> None:
    # Concurrent workers may fill the same entry: each writes its own file and renames it.
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=".tmp-", suffix=".a3m", delete=False
    ) as handle:
        handle.write(text)
    os.replace(handle.name, path)
