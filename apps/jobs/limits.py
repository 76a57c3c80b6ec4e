"""The two counts a submission checks: the account's active jobs and the queue's pending jobs.

Each is a `COUNT(*)` over jobs, and a backlog makes it grow: at 10,000 pending jobs each took
1-1.7 ms of PostgreSQL's time per submission (docs/benchmarks.md), paid by every submission
while a burst piled them up. Two things keep it bounded without loosening a limit that can be
reached:

- **Bounded counts.** A count stops at the limit (`LIMIT limit + 1` in a subquery): it only has
  to tell whether the limit is reached, so it reads at most that many index entries, 50 for an
  account on the default active-job limit.
- **Far below a large limit, a recent count.** Where the limit is at least `FAR_LIMIT` and this
  process counted at most `RECOUNT_SECONDS` ago a figure that, with what this process has added
  since, is at most half the limit, the check passes without counting. Near the limit (more
  than half of it, or any limit under `FAR_LIMIT`: every account on the defaults) it counts
  every time, inside the submission's transaction, which holds the account's row lock: exact.
  To pass a large limit unnoticed, other processes would have to add half of it within one
  second; the next count of this process sees them.
"""

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

from django.db import connection

from apps.jobs.models import Job

FAR_LIMIT = 1_000
RECOUNT_SECONDS = 1.0
_MAX_ENTRIES = 10_000

_PENDING_SQL = "SELECT COUNT(*) FROM (SELECT 1 FROM jobs_job WHERE status = %s LIMIT %s) AS pending"
_ACTIVE_SQL = (
    "SELECT COUNT(*) FROM (SELECT 1 FROM jobs_job WHERE account_id = %s AND status IN (%s, %s) "
    "LIMIT %s) AS active"
)


class _RecentCounts:
    """Per process: what each count was when last read, and what this process added since."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[Hashable, tuple[float, int]] = {}

    def fits(self, key: Hashable, *, limit: int, adding: int, count: Callable[[], int]) -> bool:
        """Whether `adding` more stay within `limit`; `count()` reads the figure (bounded)."""
        if self.far_below(key, limit=limit, adding=adding):
            return True
        return self.counted(key, limit=limit, adding=adding, counted=count())

    def far_below(self, key: Hashable, *, limit: int, adding: int) -> bool:
        """True: a recent count says `adding` more stay far below `limit`, and they are added
        to it; False: it takes a count (`counted`)."""
        if limit < FAR_LIMIT:
            return False
        now = time.monotonic()
        with self._lock:
            seen = self._counts.get(key)
            if seen is not None and now - seen[0] < RECOUNT_SECONDS:
                estimate = seen[1] + adding
                if estimate <= limit // 2:
                    self._counts[key] = (seen[0], estimate)
                    return True
        return False

    def counted(self, key: Hashable, *, limit: int, adding: int, counted: int) -> bool:
        """Whether `adding` more stay within `limit` by a count just read; remembered."""
        fits = counted + adding <= limit
        with self._lock:
            if len(self._counts) >= _MAX_ENTRIES:
                self._counts.clear()
            self._counts[key] = (time.monotonic(), counted + adding if fits else counted)
        return fits

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()


_recent = _RecentCounts()


def _count(statement: str, parameters: list[Any]) -> int:
    with connection.cursor() as cursor:
        cursor.execute(statement, parameters)
        row = cursor.fetchone()
    return int(row[0])


def queue_has_room(*, capacity: int, new_jobs: int) -> bool:
    """Whether `new_jobs` more pending jobs stay within the queue's capacity."""
    return _recent.fits(
        "pending",
        limit=capacity,
        adding=new_jobs,
        count=lambda: _count(_PENDING_SQL, [Job.Status.PENDING.value, capacity + 1]),
    )


def account_has_room(*, account_id: int, limit: int) -> bool:
    """Whether the account may have one more active (pending or running) job. Call it holding
    the account's row lock, so that near the limit concurrent submissions count one by one."""
    return _recent.fits(
        ("active", account_id),
        limit=limit,
        adding=1,
        count=lambda: _count(*account_active_count_sql(account_id=account_id, limit=limit)),
    )


def account_room_assumed(*, account_id: int, limit: int) -> bool:
    """True: far below a large limit by this process's recent count, the account has room for
    one more active job without a count (and it is added to that count). False: count, either
    with `account_has_room` or, in a statement of one's own, with `account_active_count_sql`
    and then `account_room_counted`."""
    return _recent.far_below(("active", account_id), limit=limit, adding=1)


def account_active_count_sql(*, account_id: int, limit: int) -> tuple[str, list[Any]]:
    """The account's bounded active-job count as one SELECT (SQL and parameters), for a
    statement that counts and writes at once; run it holding the account's row lock."""
    return _ACTIVE_SQL, [account_id, *Job.ACTIVE, limit + 1]


def account_room_counted(*, account_id: int, limit: int, counted: int) -> bool:
    """Whether one more active job fits by `counted` (from `account_active_count_sql`);
    remembered as `account_has_room` remembers its own count."""
    return _recent.counted(("active", account_id), limit=limit, adding=1, counted=counted)


def recent_counts_clear() -> None:
    """Forget the recent counts (tests that change limits or jobs under a process)."""
    _recent.clear()
