"""SysdigAuditTrigger: the watcher that starts a quick sync minutes after a change in Sysdig.

It runs in Airflow's triggerer as the watcher of an account's audit asset (`dags/sysdig_jupiterone.py`)
and polls the platform audit trail every `poll_interval` seconds from the position kept in the
asset's state store (`audit.Position`), re-reading `overlap` seconds before it so that late events
are not missed (an event already published is recognised by its id). A poll that finds writes to
resources the graph holds that it has not fired yet fires one event naming those resources; an
empty poll fires nothing and moves the position on. The position moves past a change only once a
quick sync has published everything it re-read for it (`pipeline.confirm_published`), or a full
sync that read the account after it has published (`pipeline.reset_watcher`, which also moves it
back when the full sync read the account before a change a quick sync published meanwhile): until
then later polls see the change as pending, and fire it again after `redrive_after` seconds, so a
failed quick run is re-driven. Delivery is at least once, and re-reading whole listings makes a
repeated hint harmless.

Without the permission to read the audit trail it logs one warning and stays idle (checking
again hourly); the scheduled full sync is not affected. Every error is logged, scrubbed of the
token, and the next poll tries again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from sysdig_j1 import audit
from sysdig_j1.hooks.http import ApiError
from sysdig_j1.hooks.sysdig import SysdigHook

PERMISSION_RECHECK_SECONDS = 3600


class SysdigAuditTrigger(BaseEventTrigger):
    def __init__(self, sysdig_conn_id: str, poll_interval: float = 20.0, overlap: float = 120.0,
                 redrive_after: float = 300.0) -> None:
        super().__init__()
        self.sysdig_conn_id = sysdig_conn_id
        self.poll_interval, self.overlap, self.redrive_after = poll_interval, overlap, redrive_after
        self._memory: dict[str, Any] = {}  # the state store when run outside a watcher (tests)
        self._warned = False

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("sysdig_j1.triggers.SysdigAuditTrigger",
                {"sysdig_conn_id": self.sysdig_conn_id, "poll_interval": self.poll_interval,
                 "overlap": self.overlap, "redrive_after": self.redrive_after})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = SysdigHook(self.sysdig_conn_id)
        hook.connection = await SysdigHook.aget_connection(self.sysdig_conn_id)  # (a cached property)
        if not hook.quick_sync:
            self.log.info("connection %r switches quick syncs off (extra quick_sync)", self.sysdig_conn_id)
            await asyncio.Event().wait()  # idle for good: this watcher never fires
        while not (permitted := await self._permitted(hook)):
            # an error asking (Sysdig unreachable) is asked again soon; a refusal hourly
            await asyncio.sleep(self.poll_interval if permitted is None else PERMISSION_RECHECK_SECONDS)
        overlap_ns = int(self.overlap * audit.NS)
        fired: set[str] = set()
        last_fired = 0.0
        if audit.Position.load(await self._get()) is None:  # first start: from now (the full sync has the past)
            await self._set(audit.Position(time.time_ns()).dump())
        while True:
            try:
                position = audit.Position.load(await self._get()) or audit.Position(time.time_ns())
                end = time.time_ns()
                changes = await asyncio.to_thread(audit.read_changes, hook, position.ns - overlap_ns, end)
                pending = position.pending(changes)
                if not pending:
                    fired.clear()
                    await self._set(position.advanced(end, [], overlap_ns).dump())
                elif {c.id for c in pending} - fired or time.monotonic() - last_fired >= self.redrive_after:
                    fired |= {c.id for c in pending}
                    last_fired = time.monotonic()
                    payload = self._payload(pending, overlap_ns)
                    self.log.info("audit trail: %d changes to %s not yet published; starting a quick sync",
                                  len(pending), ", ".join(payload["resources"]))
                    yield TriggerEvent(payload)
            except ApiError as exc:
                if exc.status == 403:  # the permission was taken away since
                    self._warn_unpermitted()
                    await asyncio.sleep(PERMISSION_RECHECK_SECONDS)
                else:  # the next poll tries again
                    self.log.error("reading the Sysdig audit trail failed: %s", hook.scrubber.text(str(exc)))
            except Exception as exc:  # the state store, the network, a bug: logged; the next poll tries again
                self.log.error("reading the Sysdig audit trail failed: %s: %s", type(exc).__name__,
                               hook.scrubber.text(str(exc)))
            await asyncio.sleep(self.poll_interval)

    def _payload(self, pending: list[audit.Change], overlap_ns: int) -> dict[str, Any]:
        """What the quick sync needs: which resources changed, and up to where it publishes
        (the changes within the overlap of the newest, by id, for the position it then writes)."""
        upto = max(c.ns for c in pending)
        return {"resources": sorted({r for c in pending for r in c.resources}), "upto": upto,
                "changes": {c.id: c.ns for c in pending if c.ns >= upto - overlap_ns}, "count": len(pending)}

    async def _permitted(self, hook: SysdigHook) -> bool | None:
        """Whether the token may read the audit trail (None: asking failed); one warning per
        trigger when it may not."""
        try:
            granted = await asyncio.to_thread(hook.permissions)
        except Exception as exc:
            self.log.error("checking the Sysdig token's permissions failed: %s", hook.scrubber.text(str(exc)))
            return None
        if granted is None or audit.AUDIT_EVENTS.permission in granted:
            return True
        self._warn_unpermitted()
        return False

    def _warn_unpermitted(self) -> None:
        if not self._warned:
            self._warned = True
            self.log.warning("the Sysdig token of connection %r lacks %s: no quick syncs for this account (the "
                             "scheduled full sync is not affected)", self.sysdig_conn_id,
                             audit.AUDIT_EVENTS.permission)

    async def _get(self) -> Any:
        store = getattr(self, "asset_state_store", None)
        return await store.aget(audit.POSITION_KEY) if store is not None else self._memory.get(audit.POSITION_KEY)

    async def _set(self, value: Any) -> None:
        store = getattr(self, "asset_state_store", None)
        if store is not None:
            await store.aset(audit.POSITION_KEY, value)
        else:
            self._memory[audit.POSITION_KEY] = value
