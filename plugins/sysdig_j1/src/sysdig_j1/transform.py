"""Transform: raw Sysdig records -> one JupiterOne entity frame and one relationship frame.

Driven entirely by `model.py`: for each declared type the generic code below reads the type's raw
resource, resolves each property from its source column(s), derivation or constant, and casts it
to the declared type. Raw columns arrive already typed by the source contract (`raw.py`), so a cast
never has to guess: nothing is coerced, nothing becomes null on the way. Only the few rules that
need logic live here, in `DERIVATIONS`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from sysdig_j1.extract import EXTRACTS
from sysdig_j1.hooks.storage import RunStorage
from sysdig_j1.model import (
    ENTITIES,
    RELATIONSHIPS,
    SEVERITIES,
    EntityType,
    Property,
    RelationshipType,
    partial_types,
    switched_off_types,
)
from sysdig_j1.raw import read_raw

log = logging.getLogger(__name__)

# Resources extracted in shards (findings), and the types only they feed: those are built, checked
# and published shard by shard, batch by batch (`build_graph(..., sharded=True)`), the rest at once.
SHARDED = frozenset(resource for resource, declared in EXTRACTS.items() if declared.sharded)
PART_ROWS = 100_000  # records of a sharded resource built (then checked, compared, sent) together
SHARDED_TYPES = frozenset({e.type for e in ENTITIES if set(e.resources) <= SHARDED}
                          | {r.type for r in RELATIONSHIPS if r.resource in SHARDED})

PULL_STRING = re.compile(
    r"^(?:(?P<registry>[^/]+\.[^/]+|[^/]+:\d+|localhost)/)?(?P<repository>[^:@]+)(?::(?P<tag>[^@]+))?(?:@.+)?$"
)


@dataclass
class Context:
    """What the rules may use besides the raw records of their own type."""

    storage: RunStorage
    app_url: str = ""
    account_name: str | None = None
    missing: set[str] = field(default_factory=set)  # resources not extracted in this run
    switched_off: set[str] = field(default_factory=set)  # resources the operator switched off
    _frames: dict[str, pd.DataFrame] = field(default_factory=dict)

    def frame(self, resource: str) -> pd.DataFrame:
        if resource not in self._frames:
            self._frames[resource] = read_raw(self.storage, resource)
        return self._frames[resource]


# -- conversions --------------------------------------------------------------------------------
def column(frame: pd.DataFrame, name: str) -> pd.Series:
    return frame[name] if name in frame.columns else pd.Series(pd.NA, index=frame.index, dtype="object")


def first_of(frame: pd.DataFrame, names: tuple[str, ...]) -> pd.Series:
    result = column(frame, names[0])
    for name in names[1:]:
        result = result.where(result.notna(), column(frame, name))
    return result


def as_string(series: pd.Series) -> pd.Series:
    return series.astype("string")


def as_string_list(series: pd.Series) -> pd.Series:
    return series.map(lambda v: [str(x) for x in v] if isinstance(v, (list, tuple, np.ndarray)) else None)


# Raw columns are typed by the source contract (timestamps already epoch ms), so these are casts.
CONVERTERS: dict[str, Callable[[pd.Series], pd.Series]] = {
    "string": as_string,
    "integer": lambda s: s.astype("Int64"),
    "number": lambda s: s.astype("Float64"),
    "boolean": lambda s: s.astype("boolean"),
    "timestamp": lambda s: s.astype("Int64"),
    "string[]": as_string_list,
    "integer[]": lambda s: s.map(lambda v: [int(x) for x in v], na_action="ignore"),
}


# -- derivations: the rules that need more than one column or the run's context ---------------
def _account_name(raw: pd.DataFrame, ctx: Context) -> pd.Series:
    fallback = ctx.account_name or ("Sysdig account " + as_string(column(raw, "customer.id")))
    return as_string(column(raw, "customer.name")).fillna(fallback)


def _user_display_name(raw: pd.DataFrame, ctx: Context) -> pd.Series:
    first = as_string(column(raw, "firstName")).fillna("")
    last = as_string(column(raw, "lastName")).fillna("")
    full = (first + " " + last).str.strip()
    return full.where(full != "", as_string(column(raw, "email")))


def _user_active(raw: pd.DataFrame, ctx: Context) -> pd.Series:
    confirmed = first_of(raw, ("activationStatus", "light.status")) == "confirmed"
    enabled = first_of(raw, ("isEnabled", "light.enabled")).astype("boolean").fillna(False)
    return (confirmed.fillna(False) & enabled).astype("boolean")


def _user_web_link(raw: pd.DataFrame, ctx: Context) -> pd.Series:
    return f"{ctx.app_url}/#/settings/users/" + as_string(column(raw, "id"))


def _team_user_count(raw: pd.DataFrame, ctx: Context) -> pd.Series:
    """Members that are users of the account: a membership of a user the users listing does not
    hold (removed in between) is not counted, so the count needs both listings complete."""
    members = ctx.frame("team_memberships")
    members = members[column(members, "userId").isin(column(ctx.frame("users"), "id"))]
    counts = column(members, "teamId").value_counts()
    return column(raw, "id").map(counts).fillna(0)


def _pull_string_part(part: str) -> Callable[[pd.DataFrame, Context], pd.Series]:
    def derive(raw: pd.DataFrame, ctx: Context) -> pd.Series:
        pull = as_string(first_of(raw, ("pullString", "mainAssetName", "fullTag")))
        # On Arrow strings a pattern given as text runs in Arrow's regex engine, not row by row in
        # Python. That engine gives "" for a group that did not take part; every group of
        # PULL_STRING matches at least one character, so "" can only mean absent.
        value = pull.astype(pd.ArrowDtype(pa.string())).str.extract(PULL_STRING.pattern)[part]
        return value.mask(value == "")

    return derive


def _membership_role(raw: pd.DataFrame, ctx: Context) -> pd.Series:
    custom = "CUSTOM:" + as_string(column(raw, "customTeamRoleId"))
    return as_string(column(raw, "standardTeamRole")).fillna(custom)


def _app_url(raw: pd.DataFrame, ctx: Context) -> pd.Series:
    return pd.Series(ctx.app_url, index=raw.index, dtype="string")


def _finding_display_name(raw: pd.DataFrame, ctx: Context) -> pd.Series:
    return (as_string(column(raw, "vulnerability.name")) + " in " + as_string(column(raw, "package.name")) + " "
            + as_string(column(raw, "package.version")))


def _finding_numeric_severity(raw: pd.DataFrame, ctx: Context) -> pd.Series:
    # An unknown severity maps to null, which the quality gate refuses (numericSeverity is required).
    return as_string(column(raw, "vulnerability.severity")).map(SEVERITIES).astype("Int64")


def _risk_accepted(raw: pd.DataFrame) -> pd.Series:
    return (as_string(column(raw, "riskAccept.status")) == "active").fillna(False).astype("boolean")


def _cve_key(raw: pd.DataFrame, ctx: Context) -> pd.Series:
    """The CVE entity's `_key`: the CVE id lower-cased; null for other advisories (GHSA-...)."""
    name = as_string(column(raw, "vulnerability.name")).str.strip()
    return name.str.lower().where(name.str.fullmatch(r"(?i)CVE-\d{4}-\d{4,}").fillna(False).astype(bool))


def _service_account_admin(raw: pd.DataFrame, ctx: Context) -> pd.Series:
    customer_admin = column(raw, "systemRoles").map(lambda roles: "ROLE_CUSTOMER" in roles, na_action="ignore")
    team_manager = as_string(column(raw, "teamRole")) == "ROLE_TEAM_MANAGER"
    return (customer_admin.astype("boolean").fillna(False) | team_manager.fillna(False)).astype("boolean")


def _sso_name(raw: pd.DataFrame, ctx: Context) -> pd.Series:
    kind = "SSO (" + as_string(column(raw, "config.type")).fillna("unknown type") + ", "
    product = as_string(column(raw, "product")).fillna("all products")
    return as_string(column(raw, "integrationName")).fillna(kind + product + ")")


def _cloud_id(*forms: tuple[str, str], build: Callable[[pd.DataFrame], pd.Series] = lambda p: p["id"]
              ) -> Callable[[pd.DataFrame, Context], pd.Series]:
    """A cloud identifier out of the first of these (field, pattern) that has the cloud's form:
    the inventory's documented fields (arn, resourceId) first, then a Kubernetes node's providerID
    (our reading); null where none has."""
    def derive(raw: pd.DataFrame, ctx: Context) -> pd.Series:
        found = pd.Series(pd.NA, index=raw.index, dtype="string")
        for field, pattern in forms:
            parts = as_string(column(raw, field)).str.extract(pattern)
            found = found.fillna(build(parts).astype("string").where(parts.notna().all(axis=1)))
        return found

    return derive


def _gke_cluster_key(raw: pd.DataFrame, ctx: Context) -> pd.Series:
    """A GKE cluster's id: its resourceId (a documented field) when its distribution says GKE (the
    same field holds an AKS cluster's Azure resource id), else its clusterId (our reading)."""
    gke = as_string(column(raw, "metadata.distribution")).str.upper() == "GKE"
    resource_id = as_string(column(raw, "metadata.resourceId")).where(gke.fillna(False))
    return "google_container_cluster:" + resource_id.fillna(as_string(column(raw, "metadata.clusterId")))


_AZURE_VM = r"/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Compute/virtualMachines/[^/]+"


_PULL = (("pullString", "string"), ("mainAssetName", "string"), ("fullTag", "string"))


@dataclass(frozen=True)
class Rule:
    """A derivation rule: the raw fields it reads, with their JSON types (the source contract holds
    records to them, `contract.py`), and how it computes the values. `total`: it answers for every
    record, its fields' absence included (no risk acceptance: open; no fix version: not fixable),
    so a required property it derives requires none of its fields."""

    reads: tuple[tuple[str, str], ...]
    derive: Callable[[pd.DataFrame, Context], pd.Series]
    total: bool = False


# The rules a property's `derive` (or a mapped relationship's `target_key_rule`) names in the model.
DERIVATIONS: dict[str, Rule] = {
    "account_name": Rule((("customer.name", "string"), ("customer.id", "integer")), _account_name),
    "app_url": Rule((), _app_url),  # the connection's base URL, not the record
    "user_display_name": Rule((("firstName", "string"), ("lastName", "string"), ("email", "string")),
                              _user_display_name),
    "user_active": Rule((("activationStatus", "string"), ("light.status", "string"), ("isEnabled", "boolean"),
                         ("light.enabled", "boolean")), _user_active),
    "user_web_link": Rule((("id", "integer"),), _user_web_link),
    "team_user_count": Rule((("id", "integer"),), _team_user_count),  # and the memberships and users (`from_resources`)
    "image_registry": Rule(_PULL, _pull_string_part("registry")),
    "image_repository": Rule(_PULL, _pull_string_part("repository")),
    "image_tag": Rule(_PULL, _pull_string_part("tag")),
    "membership_role": Rule((("standardTeamRole", "string"), ("customTeamRoleId", "integer")), _membership_role),
    "finding_display_name": Rule((("vulnerability.name", "string"), ("package.name", "string"),
                                  ("package.version", "string")), _finding_display_name),
    "finding_numeric_severity": Rule((("vulnerability.severity", "string"),), _finding_numeric_severity),
    "finding_open": Rule((("riskAccept.status", "string"),), lambda raw, ctx: ~_risk_accepted(raw), total=True),
    "finding_risk_accepted": Rule((("riskAccept.status", "string"),), lambda raw, ctx: _risk_accepted(raw),
                                  total=True),
    "finding_fixable": Rule((("vulnerability.fixVersion", "string"),), lambda raw, ctx: column(
        raw, "vulnerability.fixVersion").notna().astype("boolean"), total=True),
    "finding_from_base_image": Rule((("layer.baseImages", "string[]"),), lambda raw, ctx: column(
        raw, "layer.baseImages").map(lambda pulls: pulls is not None and len(pulls) > 0, na_action="ignore"
                                     ).astype("boolean")),
    "cve_key": Rule((("vulnerability.name", "string"),), _cve_key),
    # the resource it came from (`_resource`): service_accounts (global), or team_service_accounts
    "service_account_scope": Rule((), lambda raw, ctx: (column(raw, "_resource") == "service_accounts").map(
        {True: "global", False: "team"}).astype("string")),
    "service_account_admin": Rule((("systemRoles", "string[]"), ("teamRole", "string")), _service_account_admin,
                                  total=True),
    "never_expires": Rule((("expirationDate", "timestamp"),),
                          lambda raw, ctx: column(raw, "expirationDate").isna().astype("boolean"), total=True),
    "access_key_name": Rule((("id", "integer"),), lambda raw, ctx: "Agent access key " + as_string(column(raw, "id"))),
    "sso_name": Rule((("integrationName", "string"), ("config.type", "string"), ("product", "string")), _sso_name),
    # the documented inventory fields (arn, resourceId), else a Kubernetes node's providerID (our reading)
    "aws_instance_id": Rule((("metadata.arn", "string"), ("metadata.providerID", "string")), _cloud_id(
        ("metadata.arn", r"^arn:aws[a-z-]*:ec2:[^:]*:\d{12}:instance/(?P<id>i-[0-9a-f]+)$"),
        ("metadata.providerID", r"^aws:///[^/]*/(?P<id>i-[0-9a-f]+)$"))),
    "azure_vm_id": Rule((("metadata.resourceId", "string"), ("metadata.providerID", "string")), _cloud_id(
        ("metadata.resourceId", rf"(?i)^(?P<id>{_AZURE_VM})$"),
        ("metadata.providerID", rf"(?i)^azure://(?P<id>{_AZURE_VM})$"),
        build=lambda p: p["id"].str.lower())),
    "gce_instance_link": Rule((("metadata.resourceId", "string"), ("metadata.providerID", "string")), _cloud_id(
        ("metadata.resourceId", r"^//compute\.googleapis\.com/projects/(?P<project>[^/]+)/zones/(?P<zone>[^/]+)/"
                                r"instances/(?P<name>[^/]+)$"),
        ("metadata.providerID", r"^gce://(?P<project>[^/]+)/(?P<zone>[^/]+)/(?P<name>[^/]+)$"),
        build=lambda p: ("https://www.googleapis.com/compute/v1/projects/" + p["project"] + "/zones/" + p["zone"]
                         + "/instances/" + p["name"]))),
    "kube_cluster_key": Rule((("name", "string"),), lambda raw, ctx: "kube_cluster:" + as_string(column(raw, "name"))),
    "azure_resource_key": Rule((("metadata.resourceId", "string"),),
                               lambda raw, ctx: as_string(column(raw, "metadata.resourceId")).str.lower()),
    "gke_cluster_key": Rule((("metadata.resourceId", "string"), ("metadata.distribution", "string"),
                             ("metadata.clusterId", "string")), _gke_cluster_key),
}
_NAMED = {(f"{owner.type}.{p.name}", p.derive) for owner in (*ENTITIES, *RELATIONSHIPS) for p in owner.properties
          if p.derive} | {(r.type, r.target_key_rule) for r in RELATIONSHIPS if r.target_key_rule}
_UNDECLARED = sorted(f"{who}: {rule!r}" for who, rule in _NAMED if rule not in DERIVATIONS)
if _UNDECLARED:
    raise ValueError(f"the model names rules that transform.DERIVATIONS does not declare: {', '.join(_UNDECLARED)}")


def property_values(prop: Property, raw: pd.DataFrame, ctx: Context) -> pd.Series:
    if set(prop.from_resources) & ctx.switched_off:
        values = pd.Series(pd.NA, index=raw.index, dtype="object")
    elif prop.derive:
        values = DERIVATIONS[prop.derive].derive(raw, ctx)
    elif prop.sources:
        values = first_of(raw, prop.sources)
    else:
        values = pd.Series([prop.constant] * len(raw), index=raw.index, dtype="object")
    return CONVERTERS[prop.type](values)


# -- frames ------------------------------------------------------------------------------------
def entity_frame(entity: EntityType, ctx: Context) -> pd.DataFrame:
    if entity.more_resources:  # one frame of every resource of the type that is not switched off
        raw = pd.concat([ctx.frame(r).assign(_resource=r) for r in entity.resources if r not in ctx.switched_off],
                        ignore_index=True)
    else:
        raw = ctx.frame(entity.resource)
    if entity.enrichment:
        resource, id_field, prefix = entity.enrichment
        extra = ctx.frame(resource).drop(columns=["_partition", "_rawData"])
        if id_field in extra.columns:
            extra = extra.drop_duplicates(id_field).add_prefix(prefix)
            raw = raw.merge(extra, how="left", left_on=id_field, right_on=prefix + id_field)
    out = pd.DataFrame(
        {
            "_key": entity.type + ":" + as_string(first_of(raw, entity.key_sources)),
            "_type": pd.Series(entity.type, index=raw.index, dtype="string"),
            "_class": pd.Series(entity.cls, index=raw.index, dtype="string"),
        }
    )
    for prop in entity.properties:
        out[prop.name] = property_values(prop, raw, ctx)
    if ctx.account_name:
        out["tag.AccountName"] = pd.Series(ctx.account_name, index=raw.index, dtype="string")
    out["_rawData"] = column(raw, "_rawData").astype("string")
    return out


def relationship_frame(relationship: RelationshipType, entities: dict[str, pd.DataFrame], ctx: Context) -> pd.DataFrame:
    if relationship.resource:
        raw = ctx.frame(relationship.resource)
        if relationship.many:  # one row per key of the list
            raw = raw.explode(relationship.target_key_field).reset_index(drop=True)
        if relationship.mapped:  # the target is not ours: a rule may make its value, and rows without one have none
            rule = relationship.target_key_rule
            to_keys = as_string(DERIVATIONS[rule].derive(raw, ctx) if rule else column(raw, relationship.target_key_field))
        else:
            to_keys = relationship.target.type + ":" + as_string(column(raw, relationship.target_key_field))
        from_keys = relationship.source.type + ":" + as_string(column(raw, relationship.source_key_field))
        if relationship.mapped:  # a value the target's key rule would refuse finds nothing: it has no target
            to_keys = _matching(relationship, to_keys, relationship.target.key_pattern)
        # optional, mapped and list keys: a record without one has no such relationship (others are required)
        present = from_keys.notna() & to_keys.notna()
        if relationship.optional:  # an end listed apart, and so maybe changed in between, that is not in this graph
            present &= _published(relationship, from_keys, entities, relationship.source)
            present &= _published(relationship, to_keys, entities, relationship.target)
        raw, from_keys, to_keys = raw[present], from_keys[present], to_keys[present]
        if relationship.many:  # a key listed twice is one relationship
            unique = ~pd.DataFrame({"from": from_keys, "to": to_keys}).duplicated()
            raw, from_keys, to_keys = raw[unique], from_keys[unique], to_keys[unique]
    else:  # the account owns every entity of the target type
        owners = entities[relationship.source.type]["_key"]
        if len(owners) != 1:
            raise ValueError(f"expected exactly one {relationship.source.type} entity, found {len(owners)}")
        to_keys = entities[relationship.target.type]["_key"].reset_index(drop=True)
        raw = pd.DataFrame(index=to_keys.index)
        from_keys = pd.Series(owners.iloc[0], index=to_keys.index, dtype="string")
    out = pd.DataFrame(
        {
            "_key": from_keys + f"|{relationship.cls.lower()}|" + to_keys,
            "_type": pd.Series(relationship.type, index=raw.index, dtype="string"),
            "_class": pd.Series(relationship.cls, index=raw.index, dtype="string"),
            "_fromEntityKey": from_keys,
            "_toEntityKey": to_keys,
            "displayName": pd.Series(relationship.cls, index=raw.index, dtype="string"),
        }
    )
    for prop in relationship.properties:
        out[prop.name] = property_values(prop, raw, ctx)
    return out


def _matching(relationship: RelationshipType, values: pd.Series, pattern: str) -> pd.Series:
    """`values`, those that do not look like the target's null, with a warning saying how many."""
    fits = values.str.fullmatch(pattern).fillna(True).astype(bool)
    if not fits.all():
        log.warning("%s: %d values do not look like a %s (e.g. %r): no relationship for them", relationship.type,
                    int((~fits).sum()), relationship.target.type, values[~fits].iloc[0])
    return values.where(fits)


def _published(relationship: RelationshipType, keys: pd.Series, entities: dict[str, pd.DataFrame],
               end: EntityType) -> pd.Series:
    """Which `keys` name an entity of this graph, with a warning for the others: an optional
    reference to something listed apart (a host's cluster, a key's team) may have appeared or gone
    between the two listings; the next run links it."""
    found = keys.isna() | keys.isin(entities[end.type]["_key"])  # both ends are built, or so is not this type
    if not found.all():
        log.warning("%s: %d records name a %s this run did not list (e.g. %s): no relationship for them",
                    relationship.type, int((~found).sum()), end.type, keys[~found].iloc[0])
    return found


def build_graph(ctx: Context, sharded: bool | None = None) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Both frames of every type (a graph small enough to build at once), or (sharded False) of
    the types not fed by a sharded resource, or (sharded True) of those that are, from the batch
    of their records `ctx` holds; without the types a missing resource leaves
    incomplete (returned as the partial datasets JupiterOne must keep as they are) and without
    those of resources switched off (which JupiterOne then removes)."""
    partial_entities, partial_relationships = partial_types(ctx.missing)
    off_entities, off_relationships = switched_off_types(ctx.switched_off)
    left_out = partial_entities | partial_relationships | off_entities | off_relationships
    if sharded is not None:
        left_out |= (set(SHARDED_TYPES) if not sharded else
                     {t.type for t in (*ENTITIES, *RELATIONSHIPS) if t.type not in SHARDED_TYPES})
    entities = {e.type: entity_frame(e, ctx) for e in ENTITIES if e.type not in left_out}
    relationships = [relationship_frame(r, entities, ctx) for r in RELATIONSHIPS if r.type not in left_out]
    return (
        pd.concat(entities.values(), ignore_index=True) if entities else _empty(),
        pd.concat(relationships, ignore_index=True) if relationships else _empty(),
        # switched off wins: what an operator removes is not kept, even if another resource failed
        sorted((partial_entities | partial_relationships) - off_entities - off_relationships),
    )


def _empty() -> pd.DataFrame:
    return pd.DataFrame({"_key": pd.Series(dtype="string"), "_type": pd.Series(dtype="string")})
