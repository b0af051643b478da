"""The called-out objects of a change report as a person reads them: names, details, links.

A call-out (`changes.security_changes`, `changes.security_state`) is a list of `_key`s, and
report/changes.json keeps every one. The page shows instead what a person recognises: for an
entity its displayName, the properties its type shows (`EntityType.shown`; a team or image it
refers to by id, by that one's name) and its webLink; for a relationship (a team membership) its
two ends. Findings are not listed one by one but summarised per image: how many new critical and
high ones, how many in CISA's KEV catalogue, and which CVEs, KEV ones first.

Everything is looked up in the graph snapshots by key (`Lookup`): what was published now, else
what the baseline held (a removed user is only there).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pandas as pd

from sysdig_j1.changes import plain
from sysdig_j1.model import ENTITIES, IMAGE_SCAN, REFERS_TO

# (kind, keys, columns) -> the snapshot rows with these keys, with those of the columns they have
Lookup = Callable[[str, list[str], list[str]], pd.DataFrame]

FINDING_CALL_OUTS = ("critical_findings_opened", "high_findings_opened", "findings_risk_accepted")
SHOWN_BY_TYPE = {entity.type: entity.shown for entity in ENTITIES}
LABEL_COLUMNS = ["_key", "_type", "displayName", "webLink", *sorted({n for shown in SHOWN_BY_TYPE.values() for n in shown})]
CVES_PER_IMAGE = 10  # CVE ids named per image in a findings summary (all are counted)


def keys_of(items: Iterable) -> list[str]:
    """The `_key`s of a call-out's items (a key, or an object with one: a changed team role)."""
    return [item["_key"] if isinstance(item, dict) else item for item in items]


def describe(lookup: Lookup, call_outs: dict[str, list]) -> tuple[dict[str, dict], dict[str, list[dict]]]:
    """Labels of every object the call-outs name, but findings; and each findings call-out as
    rows per image (`by_image`). A label: {"type", "name", "link", "shown": {what: value}} for an
    entity, {"from", "to"} for a relationship (whose ends are labelled too)."""
    keys = sorted({key for name, items in call_outs.items() if name not in FINDING_CALL_OUTS
                   for key in keys_of(items)})
    summaries = {name: by_image(lookup, keys_of(items)) for name, items in call_outs.items()
                 if name in FINDING_CALL_OUTS and items}
    entities = lookup("entities", keys, LABEL_COLUMNS)
    relationships = lookup("relationships", sorted(set(keys) - set(entities["_key"])),
                           ["_key", "_fromEntityKey", "_toEntityKey"])
    ends = sorted(set(relationships["_fromEntityKey"]) | set(relationships["_toEntityKey"]))
    entities = pd.concat([entities, lookup("entities", ends, LABEL_COLUMNS)], ignore_index=True)
    images = [row["image"] for rows in summaries.values() for row in rows]
    named = _names(lookup, entities, images)
    labels = {row["_key"]: {"from": row["_fromEntityKey"], "to": row["_toEntityKey"]}
              for row in relationships.to_dict("records")}
    for row in entities.to_dict("records"):
        shown = {}
        for name in SHOWN_BY_TYPE.get(row["_type"], ()):
            value = plain(row.get(name))
            if name in REFERS_TO and value is not None:
                what, type_ = REFERS_TO[name]
                shown[what] = named.get(reference(type_.type, value), value)
            elif value is not None:
                shown[name] = value
        labels[row["_key"]] = {"type": row["_type"], "name": plain(row.get("displayName")),
                               "link": plain(row.get("webLink")), "shown": shown}
    labels.update({key: {"type": key.split(":", 1)[0], "name": name, "link": None, "shown": {}}
                   for key, name in named.items() if key not in labels})
    return labels, summaries


def by_image(lookup: Lookup, keys: list[str]) -> list[dict]:
    """Findings per image: {"image": its key, "critical", "high", "other", "kev": counts, "cves":
    the first CVES_PER_IMAGE ids, KEV ones first, then by severity}; images with KEV findings
    first, then by critical and high counts."""
    if not keys:
        return []
    found = lookup("entities", keys, ["_key", "name", "severity", "cisaKev", "imageScanId"])
    kev = found["cisaKev"] if "cisaKev" in found else pd.Series(False, index=found.index)
    found = found.assign(kev=kev.fillna(False).astype(bool),
                         rank=found["severity"].map({"critical": 0, "high": 1}).fillna(2))
    rows = []
    for image, group in found.groupby("imageScanId", sort=False):
        group = group.sort_values(["kev", "rank", "name"], ascending=[False, True, True])
        severity = group["severity"].value_counts()
        rows.append({"image": reference(IMAGE_SCAN.type, image), "critical": int(severity.get("critical", 0)),
                     "high": int(severity.get("high", 0)),
                     "other": int(len(group) - severity.get("critical", 0) - severity.get("high", 0)),
                     "kev": int(group["kev"].sum()),
                     "cves": list(dict.fromkeys(group["name"]))[:CVES_PER_IMAGE]})
    return sorted(rows, key=lambda r: (-r["kev"], -r["critical"], -r["high"], r["image"]))


def _names(lookup: Lookup, entities: pd.DataFrame, more: list[str]) -> dict[str, str]:
    """displayName of the entities the labelled ones refer to (their team, their image), and of `more`."""
    wanted = set(more)
    for column, (_, type_) in REFERS_TO.items():
        if column in entities:
            wanted |= {reference(type_.type, v) for v in entities[column].dropna()}
    found = lookup("entities", sorted(wanted), ["_key", "displayName"])
    return dict(zip(found["_key"], found["displayName"]))


def reference(type_: str, value: object) -> str:
    """The key of the `type_` entity an id property refers to (an integer id may come back from a
    column with gaps as a float)."""
    value = plain(value)
    return f"{type_}:{int(value) if isinstance(value, float) and value.is_integer() else value}"
