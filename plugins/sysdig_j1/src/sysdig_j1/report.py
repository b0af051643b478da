"""`report/index.html`: one self-contained page per run that a person can read without Airflow.

Run summary, counts per type before → after, the called-out security changes, the quality
results, and a picture of the graph's shape: entity types as nodes and relationship types as
edges, with counts (and, for a small graph, every entity and relationship, as JupiterOne's
`visualize` draws them). Inline CSS and SVG only: the page loads nothing from the network.
"""

from __future__ import annotations

import math
from html import escape

from sysdig_j1.model import ENTITIES, MAPPED_TARGETS, RELATIONSHIPS

SMALL_GRAPH = 150  # entities up to which the page also draws each entity
CALL_OUTS = {
    "users_added": "Users added", "users_removed": "Users removed", "users_disabled": "Users disabled",
    "users_enabled": "Users enabled again", "users_made_admin": "Users who became admins",
    "users_no_longer_admin": "Users who are no longer admins", "memberships_added": "Team memberships added",
    "memberships_removed": "Team memberships removed", "membership_roles_changed": "Team roles changed",
    "teams_added": "Teams added", "teams_removed": "Teams removed",
    "image_scans_failing_policy": "Image scans failing policy",
    "critical_findings_opened": "Open critical vulnerability findings, new or open again",
    "findings_risk_accepted": "Findings whose risk was accepted",
}
STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #1d2433; max-width: 1100px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.8em; border-bottom: 1px solid #ccd; }
table { border-collapse: collapse; } td, th { padding: .25em .8em; border-bottom: 1px solid #e4e6ee; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.up { color: #0a7d32; } .down { color: #b3261e; } .none { color: #777; }
.callout { background: #fff4e5; border-left: 4px solid #e8a33d; padding: .5em 1em; margin: .5em 0; }
.ok { color: #0a7d32; } .bad { color: #b3261e; font-weight: 600; }
code { font-size: .9em; } svg text { font: 12px system-ui, sans-serif; }
"""


def render(run: dict, counts_before: dict[str, int] | None, counts_after: dict[str, int], changes: dict,
           quality: dict | None, entities: list[dict] | None = None, relationships: list[dict] | None = None) -> str:
    """The page. `run`: dag_id, run_id, scope, dry_run, published_at. `entities`/`relationships`:
    (`_key`, `_type`) of every object, given only when the graph is small enough to draw whole."""
    parts = [
        f"<h1>Sysdig → JupiterOne: {escape(run['scope'])}</h1>",
        "<p>" + " · ".join(f"{escape(k)}: <code>{escape(str(v))}</code>" for k, v in run.items()) + "</p>",
        _call_outs(changes.get("security", {})),
        _counts(counts_before or {}, counts_after, changes),
        _quality(quality),
        "<h2>Shape of the graph</h2>",
        _type_graph(counts_after),
    ]
    if entities is not None and relationships is not None and len(entities) <= SMALL_GRAPH:
        parts += ["<h2>Every entity and relationship</h2>", _entity_graph(entities, relationships)]
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Sysdig → JupiterOne: "
            f"{escape(run['scope'])}</title><style>{STYLE}</style></head><body>{''.join(parts)}</body></html>")


def _call_outs(security: dict) -> str:
    found = {name: items for name, items in security.items() if items}
    if not found:
        return "<h2>Security-relevant changes</h2><p class='none' id='no-callouts'>None in this publish.</p>"
    blocks = []
    for name, items in found.items():
        shown = [f"<code>{escape(i['_key'])}</code> {escape(' → '.join(map(str, i['role'])))}" if isinstance(i, dict)
                 else f"<code>{escape(i)}</code>" for i in items[:50]]
        more = f" … and {len(items) - 50} more" if len(items) > 50 else ""
        blocks.append(f"<div class='callout' id='{name}'><strong>{escape(CALL_OUTS.get(name, name))}"
                      f" ({len(items)})</strong>: {', '.join(shown)}{more}</div>")
    return "<h2>Security-relevant changes</h2>" + "".join(blocks)


def _counts(before: dict[str, int], after: dict[str, int], changes: dict) -> str:
    rows = []
    for kind, declared in (("entities", ENTITIES), ("relationships", RELATIONSHIPS)):
        for type_ in (t.type for t in declared):
            b, a = before.get(type_, 0), after.get(type_, 0)
            change = changes.get(kind, {}).get(type_, {})
            css = "up" if a > b else "down" if a < b else "none"
            rows.append(f"<tr data-type='{type_}'><td><code>{type_}</code></td><td class='n'>{b:,}</td>"
                        f"<td class='n'>{a:,}</td><td class='n {css}'>{a - b:+,}</td>"
                        + "".join(f"<td class='n'>{change.get('counts', {}).get(what, 0):,}</td>"
                                  for what in ("added", "removed", "changed")) + "</tr>")
    return ("<h2>Counts per type</h2><table id='counts'><tr><th>type</th><th>before</th><th>after</th><th>Δ</th>"
            "<th>added</th><th>removed</th><th>changed</th></tr>" + "".join(rows) + "</table>")


def _quality(quality: dict | None) -> str:
    if not quality:
        return "<h2>Quality</h2><p class='none'>No quality report.</p>"
    failed = [r for r in quality["results"] if not r["success"]]
    verdict = (f"<p class='ok'>All {quality['evaluated']} checks passed.</p>" if not failed else
               f"<p class='bad'>{len(failed)} of {quality['evaluated']} checks failed.</p>")
    rows = "".join(f"<tr><td>{escape(r['check'])}</td><td>{escape(', '.join(r.get('keys') or []))}</td></tr>"
                   for r in failed)
    return f"<h2>Quality</h2><div id='quality'>{verdict}" + (f"<table>{rows}</table>" if rows else "") + "</div>"


def _type_graph(counts: dict[str, int]) -> str:
    """Entity types on a circle, relationship types as labelled lines between them."""
    types = [e.type for e in ENTITIES] + [t.type for t in MAPPED_TARGETS]  # mapped targets: CVEs, cloud assets
    width, height, radius = 1000, 640, 260
    centre = (width / 2, height / 2)
    at = {t: (centre[0] + radius * 1.6 * math.cos(2 * math.pi * n / len(types) - math.pi / 2),
              centre[1] + radius * math.sin(2 * math.pi * n / len(types) - math.pi / 2)) for n, t in enumerate(types)}
    lines, labels = [], []
    for rel in RELATIONSHIPS:
        (x1, y1), (x2, y2) = at[rel.source.type], at[rel.target.type]
        lines.append(f"<line x1='{x1:.0f}' y1='{y1:.0f}' x2='{x2:.0f}' y2='{y2:.0f}' stroke='#8a93b2' stroke-width='2'/>")
        labels.append(f"<text x='{(x1 + x2) / 2:.0f}' y='{(y1 + y2) / 2 - 4:.0f}' text-anchor='middle' fill='#4a5372'>"
                      f"{escape(rel.cls)} · {counts.get(rel.type, 0):,}</text>")
    nodes = [f"<g class='type-node' data-type='{t}'><circle cx='{x:.0f}' cy='{y:.0f}' r='34' fill='#dfe7ff' "
             f"stroke='#3d5afe'/><text x='{x:.0f}' y='{y - 2:.0f}' text-anchor='middle'>{escape(t)}</text>"
             f"<text x='{x:.0f}' y='{y + 14:.0f}' text-anchor='middle' font-weight='bold'>{counts.get(t, 0):,}</text></g>"
             for t, (x, y) in at.items()]
    return (f"<svg id='type-graph' width='{width}' height='{height}' viewBox='0 0 {width} {height}' "
            f"xmlns='http://www.w3.org/2000/svg'>{''.join(lines + labels + nodes)}</svg>")


def _entity_graph(entities: list[dict], relationships: list[dict]) -> str:
    """Every entity, one column per type, and every relationship as a line."""
    columns = [e.type for e in ENTITIES]
    by_type: dict[str, list[str]] = {t: [] for t in columns}
    for entity in entities:
        by_type.setdefault(entity["_type"], []).append(entity["_key"])
    row_height, column_width = 16, 230
    height = max(len(keys) for keys in by_type.values()) * row_height + 40 if entities else 60
    at = {key: (20 + column_width * n, 30 + row_height * m)
          for n, t in enumerate(by_type) for m, key in enumerate(sorted(by_type[t]))}
    lines = [f"<line x1='{at[r['_fromEntityKey']][0] + 8}' y1='{at[r['_fromEntityKey']][1]}' "
             f"x2='{at[r['_toEntityKey']][0]}' y2='{at[r['_toEntityKey']][1]}' stroke='#c5cbe0'/>"
             for r in relationships if r["_fromEntityKey"] in at and r["_toEntityKey"] in at]
    nodes = [f"<circle cx='{x}' cy='{y}' r='4' fill='#3d5afe'/><text x='{x + 8}' y='{y + 4}'>{escape(key.split(':', 1)[1])}</text>"
             for key, (x, y) in at.items()]
    headers = [f"<text x='{20 + column_width * n}' y='14' font-weight='bold'>{escape(t)}</text>" for n, t in enumerate(by_type)]
    return (f"<svg id='entity-graph' width='{column_width * len(by_type) + 40}' height='{height}' "
            f"xmlns='http://www.w3.org/2000/svg'>{''.join(headers + lines + nodes)}</svg>")
