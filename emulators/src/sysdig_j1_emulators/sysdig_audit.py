"""The platform audit trail of the Sysdig emulator (`GET /platform/v1/platform-audit-events`).

Every change made through the emulator's admin interface is recorded as the request that made it,
shaped as Sysdig's published `AuditEvent` model: who, `requestMethod`, `requestUri`,
`responseStatusCode`, `entityType`, `entityId`, and `entityPayload`: the request's body, or for a
creation the answer, which echoes the new access key's or service account's secret (so a client
that keeps payloads is caught).
Each change is followed by the read a console makes to show the result (a GET), so a client must
pick the writes out of ordinary traffic.

Paging follows the published model: `from`/`to` (nanoseconds since the epoch) or `cursor`, never
both; `limit` 1-999 (default 100); `page.total` counts the events in the window, `page.next` and
`page.prev` are opaque cursors. Our reading where the model is silent: events come newest first, a
window includes both of its ends, and a cursor carries the window it was cut from.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import threading
import time
from typing import Any

MAX_LIMIT = 999


class AuditError(ValueError):
    """A request the audit endpoint answers 400."""


class AuditTrail:
    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._events: list[dict[str, Any]] = []  # in the order they happened
        self._lock = threading.Lock()

    def record(self, method: str, uri: str, status: int, entity_type: str, entity_id: object,
               payload: dict[str, Any] | None = None, user: tuple[int, str] = (10000, "user0@example.com"),
               service_account: tuple[int, str] | None = None) -> dict[str, Any]:
        with self._lock:
            now = max(time.time_ns(), self._events[-1]["timestamp"] + 1 if self._events else 0)
            number = len(self._events)
            event_id = hashlib.sha256(f"{self._seed}:audit:{number}:{now}".encode()).hexdigest()[:24]
            event = {
                "id": event_id,
                "cursor": base64.urlsafe_b64encode(event_id.encode()).decode(),
                "timestamp": now,
                "content": {
                    "timestampNs": now, "userId": user[0], "username": user[1], "teamId": 20000,
                    "teamName": "Secure Operations", "requestMethod": method, "requestUri": uri,
                    "userOriginIP": "192.0.2.10", "queryString": "",
                    "responseStatusCode": status, "entityType": entity_type,
                    "entityId": None if entity_id is None else str(entity_id),
                    "entityPayload": None if payload is None else json.dumps(payload),
                    "serviceAccountId": service_account[0] if service_account else None,
                    "serviceAccountName": service_account[1] if service_account else None,
                },
                "labels": {"entityType": entity_type},
            }
            self._events.append(event)
            return event

    def change(self, method: str, uri: str, entity_type: str, entity_id: object,
               payload: dict[str, Any] | None = None) -> None:
        """A write as the console makes it: the change, then the read that shows its result."""
        self.record(method, uri, 200 if method != "POST" else 201, entity_type, entity_id, payload)
        self.record("GET", uri, 200, entity_type, entity_id)

    def page(self, query: dict[str, str]) -> dict[str, Any]:
        """The answer to `GET /platform/v1/platform-audit-events` with these query parameters."""
        cursor = query.get("cursor")
        if cursor and ("from" in query or "to" in query):
            raise AuditError("'cursor' cannot be combined with 'from' or 'to'")
        limit = _integer(query, "limit", 100, 1, MAX_LIMIT)
        if cursor:
            start, end, offset = _decode(cursor)
        else:
            end = _integer(query, "to", time.time_ns(), 0, 2**63 - 1)
            start, offset = _integer(query, "from", end - 24 * 3600 * 10**9, 0, end), 0
        with self._lock:
            window = [e for e in reversed(self._events) if start <= e["timestamp"] <= end]
        chosen = window[offset:offset + limit]
        return {
            "page": {"total": len(window),
                     "prev": _encode(start, end, max(offset - limit, 0)) if offset else None,
                     "next": _encode(start, end, offset + limit) if offset + limit < len(window) else None},
            "data": chosen,
        }


def _integer(query: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise AuditError(f"Invalid parameter '{name}': must be an integer in [{low}, {high}]")
    return int(raw)


def _encode(start: int, end: int, offset: int) -> str:
    return base64.urlsafe_b64encode(f"{start}:{end}:{offset}".encode()).decode().rstrip("=")


def _decode(cursor: str) -> tuple[int, int, int]:
    try:
        start, end, offset = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().split(":")
        return int(start), int(end), int(offset)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise AuditError("Invalid parameter 'cursor'") from None
