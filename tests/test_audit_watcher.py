"""The audit-trail watcher (`triggers.SysdigAuditTrigger`) against the Sysdig emulator's audit trail,
run as the triggerer runs it (its async generator), with a state store standing in for the
asset's, and the quick sync's confirmation played by the test: fires once per poll with unpublished
writes, never on a quiet one; re-drives what was not published; survives a restart without losing
or double-counting a change; ignores reads, failed writes and what the graph does not hold; idles
without the permission; keeps nothing of an event's payload.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
import requests
from conftest import SYSDIG_TOKEN

from sysdig_j1 import audit, pipeline
from sysdig_j1_emulators.sysdig import ALL_PERMISSIONS
from sysdig_j1_emulators.sysdig_org import OrgSpec
from sysdig_j1.hooks.sysdig import ListingError, SysdigHook
from sysdig_j1.hooks.storage import RunStorage
from sysdig_j1.triggers import SysdigAuditTrigger

POSITION_KEY = audit.POSITION_KEY

POLL, OVERLAP = 0.2, 5.0
AUDIT = "GET /platform/v1/platform-audit-events"


class Store:
    """The asset state store: what the trigger (aget/aset) and the quick sync (get/set) share."""

    def __init__(self) -> None:
        self.values: dict = {}

    async def aget(self, key, default=None):
        return self.values.get(key, default)

    async def aset(self, key, value):
        self.values[key] = json.loads(json.dumps(value))  # stored as JSON, as Airflow stores it

    def get(self, key, default=None):
        return self.values.get(key, default)

    def set(self, key, value):
        self.values[key] = json.loads(json.dumps(value))


class Watcher:
    """A trigger running in the background; its events collected as they come."""

    def __init__(self, store: Store, redrive_after: float = 30.0) -> None:
        self.trigger = SysdigAuditTrigger("sysdig_default", poll_interval=POLL, overlap=OVERLAP,
                                          redrive_after=redrive_after)
        self.trigger.asset_state_store = store
        self.events: asyncio.Queue = asyncio.Queue()
        self.task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        async for event in self.trigger.run():
            await self.events.put(event.payload)

    async def next(self, timeout: float) -> dict | None:
        try:
            return await asyncio.wait_for(self.events.get(), timeout)
        except asyncio.TimeoutError:
            return None

    def stop(self) -> None:
        self.task.cancel()


@pytest.fixture
def sysdig(start_sysdig, monkeypatch):
    def start(**options):
        emulator = start_sysdig(OrgSpec(), **options)
        monkeypatch.setenv("AIRFLOW_CONN_SYSDIG_DEFAULT", json.dumps(
            {"conn_type": "sysdig", "host": emulator.url, "password": SYSDIG_TOKEN, "extra": {"region": "us2"}}))
        return emulator

    return start


def change(emulator, path: str, body: dict | None = None) -> dict:
    response = requests.post(emulator.url + path, json=body, timeout=5)
    response.raise_for_status()
    return response.json()


def audit_requests(emulator) -> int:
    return requests.get(f"{emulator.url}/_emulator/stats", timeout=5).json()["requests"].get(AUDIT, 0)


def publish(store: Store, payload: dict, storage: RunStorage | None = None, reread: tuple[str, ...] = ()) -> None:
    """What the quick sync does once it published: the watcher's position moves past the changes."""
    pipeline.confirm_published(store, storage or RunStorage("memory://", "quick", "run"), {"reread": list(reread)},
                               [payload], OVERLAP)


def test_writes_map_to_the_resources_declared_to_change_with_them():
    assert audit.changed_resources("PUT", "/platform/v1/users/10005", 200) == ("users",)
    assert set(audit.changed_resources("PUT", "/platform/v1/teams/20001/users/10005?x=1", 204)) == {
        "teams", "team_memberships"}
    assert audit.changed_resources("POST", "/api/customer/accessKeys", 201) == ("access_keys",)
    assert audit.changed_resources("GET", "/platform/v1/users/10005", 200) == ()  # a read
    assert audit.changed_resources("DELETE", "/platform/v1/users/10005", 403) == ()  # refused: nothing changed
    assert audit.changed_resources("POST", "/secure/policies", 201) == ()  # not in the graph
    assert audit.changed_resources("PUT", "/platform/v1/usersettings", 200) == ()  # not a users path


def test_a_quiet_trail_fires_nothing_and_costs_one_request_a_poll(sysdig):
    emulator = sysdig()
    store = Store()

    async def run() -> tuple[dict | None, float]:
        watcher, started = Watcher(store), time.monotonic()
        change(emulator, "/_emulator/audit", {"requestMethod": "GET", "requestUri": "/platform/v1/users",
                                              "responseStatusCode": 200})
        change(emulator, "/_emulator/audit", {"requestMethod": "DELETE", "requestUri": "/platform/v1/users/10003",
                                              "responseStatusCode": 403})
        change(emulator, "/_emulator/audit", {"requestMethod": "POST", "requestUri": "/secure/policies",
                                              "responseStatusCode": 201})
        event = await watcher.next(2.0)
        watcher.stop()
        return event, time.monotonic() - started

    event, seconds = asyncio.run(run())
    assert event is None
    assert audit_requests(emulator) <= seconds / POLL + 1
    assert store.values[POSITION_KEY]["ns"] > time.time_ns() - 3 * audit.NS  # the position moved on


def test_a_burst_fires_once_and_a_published_change_never_again(sysdig):
    emulator = sysdig()
    store = Store()

    async def run() -> tuple[list[dict], dict | None]:
        watcher = Watcher(store)
        await asyncio.sleep(2 * POLL)
        for n in range(50):
            change(emulator, f"/_emulator/users/{10000 + n % 30}/update", {"isAdmin": True})
        fired = []
        while (payload := await watcher.next(1.5)) is not None:
            fired.append(payload)
            publish(store, payload)
        after = await watcher.next(1.0)
        watcher.stop()
        return fired, after

    fired, after = asyncio.run(run())
    assert 1 <= len(fired) <= 3 and after is None
    assert sum(p["count"] for p in fired) == 50 and {r for p in fired for r in p["resources"]} == {"users"}


def test_an_unpublished_change_is_fired_again_and_a_restart_loses_none(sysdig):
    """The quick run failed (no confirmation): re-driven. The triggerer restarts mid-burst: the new
    watcher reports what is unpublished, from the stored position, and nothing published."""
    emulator = sysdig()
    store = Store()

    async def run() -> tuple[dict, dict, dict, dict | None]:
        watcher = Watcher(store, redrive_after=1.0)
        await asyncio.sleep(2 * POLL)
        change(emulator, "/_emulator/users/10005/update", {"isAdmin": True})
        first = await watcher.next(3.0)
        again = await watcher.next(3.0)  # not published: fired again after redrive_after
        publish(store, again)
        change(emulator, "/_emulator/teams/20000/users/10006/add")
        watcher.stop()  # the triggerer dies before it saw the new change
        restarted = Watcher(store, redrive_after=1.0)
        after_restart = await restarted.next(3.0)
        publish(store, after_restart)
        quiet = await restarted.next(2.0)
        restarted.stop()
        return first, again, after_restart, quiet

    first, again, after_restart, quiet = asyncio.run(run())
    assert first["changes"] == again["changes"] and first["resources"] == ["users"]
    assert after_restart["resources"] == ["team_memberships", "teams"] and after_restart["count"] == 1
    assert quiet is None


def test_without_the_permission_the_watcher_warns_once_and_stays_idle(sysdig, capfd, caplog):
    emulator = sysdig(permissions=[p for p in ALL_PERMISSIONS if p != "audit-trail-events.read"])

    async def run() -> dict | None:
        watcher = Watcher(Store())
        change(emulator, "/_emulator/users/10005/update", {"isAdmin": True})
        event = await watcher.next(2.0)
        watcher.stop()
        return event

    with caplog.at_level(logging.WARNING):
        assert asyncio.run(run()) is None
    assert audit_requests(emulator) == 0
    logs = capfd.readouterr().out + caplog.text
    warnings = [line for line in logs.splitlines() if "lacks audit-trail-events.read" in line]
    assert len(warnings) == 1 and "the scheduled full sync is not affected" in warnings[0]


def test_secrets_echoed_in_event_payloads_are_never_kept(sysdig, capfd, caplog):
    emulator = sysdig()
    store = Store()

    async def run() -> dict | None:
        watcher = Watcher(store)
        await asyncio.sleep(2 * POLL)
        created = [change(emulator, "/_emulator/service-accounts", {"name": "bot", "systemRoles": ["ROLE_CUSTOMER"]}),
                   change(emulator, "/_emulator/access-keys", {"teamId": 20000})]
        payload = await watcher.next(3.0)
        publish(store, payload)
        watcher.stop()
        return payload, created

    with caplog.at_level(logging.DEBUG):
        payload, created = asyncio.run(run())
    secrets = [created[0]["apiKey"], created[1]["accessKey"]]
    assert set(payload["resources"]) == {"service_accounts", "access_keys"}
    kept = json.dumps(payload) + json.dumps(store.values) + caplog.text + "".join(capfd.readouterr())
    assert not [s for s in secrets if s in kept]


def test_the_trail_is_read_completely_across_pages(sysdig, monkeypatch):
    emulator = sysdig()
    start = time.time_ns()
    for n in range(1_200):  # two pages of 999
        emulator.audit.record("PUT", f"/platform/v1/users/{10000 + n % 30}", 200, "user", 10000 + n % 30)
    hook = SysdigHook()

    changes = audit.read_changes(hook, start, time.time_ns())

    assert len(changes) == 1_200 and len({c.id for c in changes}) == 1_200
    monkeypatch.setattr(type(emulator.audit), "page", lambda self, query: {"page": {"total": 1}, "data": [{"id": 5, "content": {}}]})
    with pytest.raises(ListingError, match="Sysdig GET /platform/v1/platform-audit-events failed: page 0, event 0: "
                                           "an event needs a text id and an integer timestamp"):
        audit.read_changes(hook, start, time.time_ns())


def test_a_quick_sync_that_could_not_re_read_everything_leaves_its_changes_to_fire_again(tmp_path):
    store, payload = Store(), {"resources": ["users"], "upto": 2_000, "changes": {"e1": 2_000}, "count": 1}
    storage = RunStorage(f"file://{tmp_path}", "quick", "run")
    storage.write_json(storage.manifest("account"), {})  # the account was re-read, the users were not

    publish(store, payload, storage, reread=("account", "users"))
    assert POSITION_KEY not in store.values
    storage.write_json(storage.manifest("users"), {})
    publish(store, payload, storage, reread=("account", "users"))
    assert store.values[POSITION_KEY] == {"ns": 2_000, "seen": {"e1": 2_000}, "covered": 0}


def test_a_full_sync_sets_the_watcher_to_when_it_began_reading():
    """Forward past a change no quick sync could publish; back before one a quick sync published
    after the full sync had read the account (its publish overwrote it), which is then fired again;
    and a change before the full sync's start, which the moved-back overlap re-reads after its id
    was forgotten, is published by the full sync and never fired again."""
    store = Store()
    store.set(POSITION_KEY, {"ns": 5_000, "seen": {"early": 3_500, "late": 4_800}})

    pipeline.reset_watcher(store, {"started_ns": 4_000})

    assert store.values[POSITION_KEY] == {"ns": 4_000, "seen": {}, "covered": 4_000}
    position = audit.Position.load(store.values[POSITION_KEY])
    read = [audit.Change(i, ns, ("users",)) for i, ns in (("forgotten", 2_500), ("early", 3_500), ("late", 4_800))]
    assert [c.id for c in position.pending(read)] == ["late"]
    assert [c.id for c in position.advanced(6_000, [], 1_000).pending(read)] == ["late"]  # still covered
    pipeline.reset_watcher(store, {"started_ns": 9_000})
    assert store.values[POSITION_KEY]["ns"] == 9_000
