"""Where polling a CRM by its modification stamp resumes, exactly once, however many records share a stamp.

Outreach (`updatedAt`) and HubSpot (`lastmodifieddate`, through its search API) filter on the stamp only by
value ("at or after since"), not "after this (stamp, id)", and many records may share one stamp (Outreach's
are whole seconds). So the read is done in passes, and a cursor keeps three things:

1. Within a pass, the pages come from the CRM's own cursor (`next`: Outreach's `links.next` with every
   original parameter, HubSpot's `paging.next.after`). Kept on the sort keys and id of the last row sent
   (as the mock keeps it), a record edited mid-pass moves past it and shows up again later in the same
   pass, whatever the page size. (Outreach does not document what its cursor holds: were it an offset, a
   row could be skipped mid-pass, and only a reconcile would find it.)
2. `since`, the inclusive lower bound of the next pass: the newest stamp read, held back to one
   SETTLE_SECONDS before the CRM's own clock (its Date header) while that is earlier. A write that
   commits late, or a second write in the same second, carries a stamp at or after `since`, so the
   next pass reads it. A pass that reads no row leaves `since` where it is.
3. `read`: the records read at or after `since`, by stamp, with a digest of their attributes. A row
   read again with the same stamp and digest is skipped; a changed one is a new change, even within
   the same second. What lies before the new `since` is forgotten, so the cursor holds the records of
   the newest stamp and of the last minute or so, no more.

The price: the records of the newest stamp are read again by each pass until a newer one appears.
A row older than `since` (a server that ignores part of the filter) is skipped: it was read before.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

EPOCH = "1970-01-01T00:00:00.000Z"
SETTLE_SECONDS = 60.0
ANY = "*"  # a digest that matches any content: ids an older cursor said were delivered at `since`


def canonical(value: str) -> str:
    """One spelling for every instant (`2021-11-10T14:17:38.000Z`), so strings compare in time order."""
    return _spell(datetime.fromisoformat(value.replace("Z", "+00:00")))


def _spell(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def digest(attributes: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(attributes, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass
class PollCursor:
    since: str = EPOCH
    size: int = 0
    read: dict[str, dict[str, str]] = field(default_factory=dict)  # stamp -> {id: digest}
    next: str | None = None  # the pass's next page (links.next), while a pass is under way
    top: str | None = None  # the newest stamp read in this pass
    _where: dict[str, str] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def load(cls, raw: str | None, size: int) -> PollCursor:
        state: dict[str, Any] = json.loads(raw) if raw else {}
        since = canonical(str(state.get("since") or EPOCH))
        cursor = cls(since=since, size=int(state.get("size") or size))
        if "delivered" in state:  # the cursor before passes: ids delivered at `since`; its pass starts again
            cursor.read = {since: dict.fromkeys(map(str, state["delivered"]), ANY)}
            return cursor
        cursor.read = {str(k): {str(i): str(d) for i, d in v.items()} for k, v in (state.get("read") or {}).items()}
        cursor.next, cursor.top = state.get("next"), state.get("top")
        return cursor

    def dump(self) -> str:
        state: dict[str, Any] = {"since": self.since, "size": self.size, "read": self.read}
        if self.next:
            state |= {"next": self.next, "top": self.top}
        return json.dumps(state, separators=(",", ":"))

    def take(self, row_id: str, stamp: str, attributes: dict[str, Any]) -> bool:
        """True when this row is a change not delivered before; it is remembered either way."""
        stamp = canonical(stamp)
        if stamp < self.since:
            return False
        found = digest(attributes)
        known = self.read.get(stamp, {}).get(row_id)
        self.top = max(self.top or stamp, stamp)
        if known in (found, ANY):
            return False
        self._forget(row_id)
        self.read.setdefault(stamp, {})[row_id] = found
        if self._where is not None:
            self._where[row_id] = stamp
        return True

    def finish(self, now: float, *, capped: bool = False) -> None:
        """The pass is over: move `since` up to the settled point and forget what lies before it.

        `capped`: the pass stopped at the CRM's cap on what one query may page through (HubSpot's 10,000), not
        at its end. `since` then moves to the newest stamp read, settled or not: held back, the next pass would
        read the same capped window again and never get further. A late write older than it is a reconcile's.
        """
        if self.top is not None and capped:
            self.since = max(self.since, self.top)
        elif self.top is not None:  # no row read: nothing says the time since `since` is over, so it stays
            settled = _spell(datetime.fromtimestamp(now - SETTLE_SECONDS, UTC))
            self.since = max(self.since, min(settled, self.top))
        self.read = {stamp: ids for stamp, ids in self.read.items() if stamp >= self.since}
        self.next = self.top = None

    def _forget(self, row_id: str) -> None:
        """Drop the row's older stamp (it was edited); the index of stamps by id is built on first use."""
        if self._where is None:
            self._where = {i: stamp for stamp, ids in self.read.items() for i in ids}
        old = self._where.get(row_id)
        if old is not None and row_id in self.read.get(old, {}):
            del self.read[old][row_id]
            if not self.read[old]:
                del self.read[old]
