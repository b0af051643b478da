"""Sysdig's platform audit trail as a hint of what changed, for the quick sync.

An audit event is a request log, not the new state: the watcher (`triggers.SysdigAuditTrigger`)
reads only which resource a successful write touched, and the quick sync then re-reads whole
listings of it (`model.reread_with`), so a lost or repeated hint cannot leave the graph wrong. An
event is reduced to its id, time, method, path and status as soon as it is read; its
`entityPayload`, which echoes a new access key's or service account's secret, is never kept.

Which writes matter is declared with each resource (`extract.EXTRACTS`, `audited`). The position
the watcher reads from is `Position`: the time up to which every change was published, and the ids
of the events just before it that were (the next read overlaps it, to catch late events).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sysdig_j1.extract import EXTRACTS, Endpoint
from sysdig_j1.hooks.sysdig import Listing, ListingError, SysdigHook

AUDIT_EVENTS = Endpoint("/platform/v1/platform-audit-events", "audit-trail-events.read", paging="cursor",
                        limit=999, model="ListAuditEventsResponse")
READS = frozenset({"GET", "HEAD", "OPTIONS"})
NS = 1_000_000_000
POSITION_KEY = "published"  # where the audit asset's state store keeps the watcher's `Position`


def _pattern(template: str) -> re.Pattern:
    """A path template (`/platform/v1/teams/{id}/users`) matching that path and any below it."""
    parts = (re.escape(part) if not part.startswith("{") else "[^/]+" for part in template.strip("/").split("/"))
    return re.compile("^/" + "/".join(parts) + "(/|$)")


AUDITED = {declared.resource: tuple(map(_pattern, declared.audited)) for declared in EXTRACTS.values()
           if declared.audited}


@dataclass(frozen=True)
class Change:
    """What is kept of an audit event: enough to know what to re-read, nothing of its content."""

    id: str
    ns: int  # when it happened, nanoseconds since the epoch
    resources: tuple[str, ...]


def changed_resources(method: str, uri: str, status: int) -> tuple[str, ...]:
    """The resources a request changed: a successful (2xx) write to a path a resource declares."""
    if method.upper() in READS or not 200 <= status < 300:
        return ()
    path = uri.split("?", 1)[0]
    return tuple(resource for resource, patterns in AUDITED.items() if any(p.match(path) for p in patterns))


def read_changes(hook: SysdigHook, start_ns: int, end_ns: int) -> list[Change]:
    """Every write to a resource the graph holds between the two times, from a listing verified
    complete like every other (its `page.total`, no cursor visited twice); an event that is not
    shaped as published fails, naming the endpoint and the event."""
    listing = Listing(AUDIT_EVENTS.path, "audit", paging=AUDIT_EVENTS.paging, limit=AUDIT_EVENTS.limit,
                      params={"from": start_ns, "to": end_ns}, cursor_carries_query=True)
    changes = []
    for page in hook.iter_pages([listing]):
        for position, event in enumerate(page.records):
            change = _change(event, f"page {page.number}, event {position}")
            if change.resources:
                changes.append(change)
    return changes


def _change(event: Any, where: str) -> Change:
    def fail(problem: str) -> ListingError:
        return ListingError("GET", AUDIT_EVENTS.path, f"{where}: {problem}")

    if not isinstance(event, dict) or not isinstance(event.get("content"), dict):
        raise fail("not an audit event with content")
    content = event["content"]
    event_id, ns = event.get("id"), event.get("timestamp", content.get("timestampNs"))
    method, uri, status = content.get("requestMethod"), content.get("requestUri"), content.get("responseStatusCode")
    if not isinstance(event_id, str) or not isinstance(ns, int) or isinstance(ns, bool):
        raise fail("an event needs a text id and an integer timestamp")
    if not isinstance(method, str) or not isinstance(uri, str) or not isinstance(status, int):
        raise fail(f"event {event_id!r} has no requestMethod, requestUri and responseStatusCode")
    return Change(event_id, ns, changed_resources(method, uri, status))


@dataclass
class Position:
    """Up to when (ns) every change was published, the changes published in the `overlap` before
    it, by id, so that re-reading the overlap does not report them again, and the start of the
    last full sync (`covered`): every change before that was published by it, seen or not."""

    ns: int
    seen: dict[str, int] = field(default_factory=dict)  # event id -> its time
    covered: int = 0

    @classmethod
    def load(cls, value: Any) -> Position | None:
        if not isinstance(value, dict) or not isinstance(value.get("ns"), int):
            return None
        seen = value.get("seen") if isinstance(value.get("seen"), dict) else {}
        covered = value.get("covered") if isinstance(value.get("covered"), int) else 0
        return cls(value["ns"], {k: v for k, v in seen.items() if isinstance(v, int)}, covered)

    def dump(self) -> dict:
        return {"ns": self.ns, "seen": self.seen, "covered": self.covered}

    def pending(self, changes: list[Change]) -> list[Change]:
        """The changes of a read from (position - overlap) on not yet published: those neither
        seen nor before the last full sync."""
        return [c for c in changes if c.id not in self.seen and c.ns >= self.covered]

    def advanced(self, to_ns: int, published: list[Change], overlap_ns: int) -> Position:
        """The position after these changes were published (or, with none, after a quiet read up
        to `to_ns`); it never moves back, and forgets ids older than the overlap."""
        ns = max(self.ns, to_ns, *(c.ns for c in published))
        seen = {**self.seen, **{c.id: c.ns for c in published}}
        return Position(ns, {i: t for i, t in seen.items() if t >= ns - overlap_ns}, self.covered)

    def reset_to(self, ns: int) -> Position:
        """The position after a full sync that read the account from `ns` on: whatever happened
        before is published (including changes older than the ids still remembered, which the
        overlap re-reads when the position moves back), and whatever happened since must be
        published again (the full sync may just have overwritten a quicker publish of it with what
        it read earlier)."""
        return Position(ns, {}, ns)

