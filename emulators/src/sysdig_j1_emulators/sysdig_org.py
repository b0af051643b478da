"""A deterministic, lazily computed Sysdig organisation for the emulator.

Every record is a pure function of (seed, kind, index), so an organisation of 100,000 users and
1,000,000 scans costs nothing at start-up and a page costs O(page). The only mutable state is what
tests change between two syncs: users removed, made admin or disabled, a user joining or leaving a
team, a team removed, service accounts and agent access keys created.
"""

from __future__ import annotations

import bisect
import hashlib
import random
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

from sysdig_j1_emulators.sysdig_results import ResultCatalogue

USER_ID_BASE = 10000
TEAM_ID_BASE = 20000
ROLE_ID_BASE = 5
CUSTOM_TEAM_ROLE_ID = 7
ZONE_ID_BASE = 40000
SERVICE_ACCOUNT_ID_BASE = 50000  # global ones; a team's follow TEAM_SERVICE_ACCOUNT_ID_BASE
TEAM_SERVICE_ACCOUNT_ID_BASE = 60000
ACCESS_KEY_ID_BASE = 70000
IP_FILTER_ID_BASE = 80000
TEAM_THEME = "#7BB0B2"
STAGES = ("runtime", "pipeline", "registry")

_FIRST_NAMES = ("Ada", "Alan", "Barbara", "Claude", "Donald", "Edsger",
                "Frances", "Grace", "John", "Katherine", "Linus", "Margaret")
_LAST_NAMES = ("Lovelace", "Turing", "Liskov", "Shannon", "Knuth", "Dijkstra",
               "Allen", "Hopper", "Backus", "Johnson", "Torvalds", "Hamilton")
_TEAM_DEFAULT_ROLES = ("ROLE_TEAM_STANDARD", "ROLE_TEAM_EDIT", "ROLE_TEAM_READ")
_MEMBER_ROLES = ("ROLE_TEAM_STANDARD", "ROLE_TEAM_READ", "ROLE_TEAM_EDIT")
_REGISTRIES = ("docker.io", "quay.io", "123456789012.dkr.ecr.us-east-1.amazonaws.com", "gcr.io")
_VENDORS = ("dockerhub", "quay", "ecr", "gcr")
_POLICY_RESULTS = ("passed", "failed", "accepted", "noPolicy")
_LEGACY_POLICY_STATUSES = ("PASS", "STOP", "WARN")

_USERS_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
_TEAMS_EPOCH = datetime(2023, 6, 1, tzinfo=UTC)
_SCANS_EPOCH = datetime(2024, 6, 1, tzinfo=UTC)
_LAST_SEEN_EPOCH_MS = 1_700_000_000_000


@dataclass(frozen=True)
class OrgSpec:
    seed: int = 7
    users: int = 30
    teams: int = 4
    admins: int = 2
    scans: int = 45
    customer_id: int = 5000001
    customer_name: str | None = None
    duplicate_users: int = 0  # the last n users repeat the first n ids (a data-quality fault)
    packages_per_scan: int = 20  # mean packages of an image's full scan result (~1.9 vulnerabilities each)
    roles: int = 3  # custom roles; the memberships' custom role (CUSTOM_TEAM_ROLE_ID) needs 3
    service_accounts: int = 3  # global ones
    team_service_accounts: int = 1  # per team
    access_keys: int = 5
    zones: int = 3  # the first is the built-in "Entire Infrastructure"
    ip_filters: int = 4
    clusters: int = 3
    hosts: int = 16  # nodes spread over the clusters, every (clusters + 1)th a host of no cluster

    def __post_init__(self) -> None:
        for name in ("users", "teams", "admins", "scans", "duplicate_users", "packages_per_scan", "roles",
                     "service_accounts", "team_service_accounts", "access_keys", "zones", "ip_filters", "clusters",
                     "hosts"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.admins > self.users:
            raise ValueError("admins must be <= users")
        if self.duplicate_users > self.users:
            raise ValueError("duplicate_users must be <= users")


# -- index sequences -------------------------------------------------------------------------
class Survivors(Sequence[int]):
    """range(start, stop, step) minus `removed` (sorted members of that range), indexable in O(log r)."""

    def __init__(self, start: int, stop: int, step: int, removed: Sequence[int] = ()) -> None:
        self._range = range(start, stop, step)
        positions = [self._range.index(value) for value in removed]
        # survivors before the j-th removed position; non-decreasing, so bisect finds how many
        # removed positions precede the k-th survivor
        self._survivors_before = [position - j for j, position in enumerate(positions)]

    def __len__(self) -> int:
        return len(self._range) - len(self._survivors_before)

    def __getitem__(self, k: int) -> int:  # type: ignore[override]  # slices go through page()
        if not 0 <= k < len(self):
            raise IndexError(k)
        return self._range[k + bisect.bisect_right(self._survivors_before, k)]


class Concat(Sequence[int]):
    """Several index sequences read as one, without copying them."""

    def __init__(self, *parts: Sequence[int]) -> None:
        self._parts = parts

    def __len__(self) -> int:
        return sum(len(part) for part in self._parts)

    def __getitem__(self, k: int) -> int:  # type: ignore[override]
        for part in self._parts:
            if 0 <= k < len(part):
                return part[k]
            k -= len(part)
        raise IndexError(k)


def page(sequence: Sequence[int], offset: int, limit: int) -> list[int]:
    return [sequence[k] for k in range(offset, min(len(sequence), offset + limit))]


# -- formatting helpers ----------------------------------------------------------------------
def _iso(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%dT%H:%M:%SZ")


def _iso_micros(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _epoch_ms(instant: datetime) -> int:
    return int(instant.timestamp()) * 1000


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# -- identities, keys and settings (/platform/v1) -------------------------------------------------
_ROLE_NAMES = ("Auditor", "Incident Responder", "Platform Operator")
_MONITOR_PERMISSIONS = ("dashboards.read", "alerts.read", "alerts.edit", "metrics-data.read")
_SECURE_PERMISSIONS = ("policy-events.read", "scanning.read", "runtime-policies.edit", "capture.read",
                       "rapid-response.exec")
_CLOUDS = ("aws", "azure", "gce", "none")
_DISTRIBUTIONS = ("EKS", "AKS", "GKE", "OpenShift")
_SSO_EPOCH = datetime(2024, 3, 1, tzinfo=UTC)


class PlatformMixin:
    """Roles, service accounts, access keys, zones, SSO settings, IP filters and the inventory's
    clusters and hosts, each a pure function of the spec and an index like the rest."""

    spec: OrgSpec

    def role(self, r: int) -> dict[str, Any]:
        return {"id": ROLE_ID_BASE + r, "name": _ROLE_NAMES[r % 3] + ("" if r < 3 else f" {r}"),
                "description": None if r % 3 == 2 else f"Custom role {r}",
                "monitorPermissions": list(_MONITOR_PERMISSIONS[: 1 + r % 4]),
                "securePermissions": list(_SECURE_PERMISSIONS[: 1 + (r * 2) % 5])}

    def service_account(self, g: int) -> dict[str, Any]:
        """A global service account: the first is a customer administrator."""
        created = _USERS_EPOCH + timedelta(days=g)
        return {"id": SERVICE_ACCOUNT_ID_BASE + g, "name": f"ci-bot-{g}", "teamId": None, "teamRole": None,
                "systemRoles": ["ROLE_CUSTOMER"] if g == 0 else ["ROLE_USER"],
                **self._token_dates(g, created)}

    def team_service_account(self, j: int, k: int) -> dict[str, Any]:
        n = j * self.spec.team_service_accounts + k
        created = _TEAMS_EPOCH + timedelta(days=j, hours=k)
        return {"id": TEAM_SERVICE_ACCOUNT_ID_BASE + n, "name": f"team-{j}-agent-{k}", "teamId": TEAM_ID_BASE + j,
                "teamRole": "ROLE_TEAM_MANAGER" if n % 3 == 0 else "ROLE_TEAM_STANDARD", "systemRoles": ["ROLE_USER"],
                **self._token_dates(n, created)}

    @staticmethod
    def _token_dates(n: int, created: datetime) -> dict[str, Any]:
        """Every other token never expires; every third was never used."""
        return {"dateCreated": _iso(created), "lastUpdated": _iso(created + timedelta(days=1)),
                "lastUsed": None if n % 3 == 2 else _iso(created + timedelta(days=30 + n)),
                "expirationDate": None if n % 2 == 0 else _iso(created + timedelta(days=365))}

    def access_key_value(self, a: int) -> str:
        """The secret an agent presents: the API returns it; nothing downstream may keep it."""
        return str(uuid.UUID(bytes=hashlib.sha256(f"{self.spec.seed}:agent-key:{a}".encode()).digest()[:16], version=4))

    def access_key(self, a: int, team_ids: Sequence[int]) -> dict[str, Any]:
        created = _USERS_EPOCH + timedelta(days=2 * a)
        enabled = a % 4 != 3
        return {"id": ACCESS_KEY_ID_BASE + a, "isEnabled": enabled, "accessKey": self.access_key_value(a),
                "dateCreated": _iso(created), "dateDisabled": None if enabled else _iso(created + timedelta(days=9)),
                "agentLimit": None if a % 3 == 0 else 10 * a, "agentReservation": None if a % 3 == 0 else a,
                "teamId": team_ids[a % len(team_ids)] if a % 2 == 0 and team_ids else None,
                "metadata": {"purpose": "production" if a % 2 == 0 else "staging"}}

    def zone(self, z: int) -> dict[str, Any]:
        if z == 0:
            scopes: list[dict[str, Any]] = []
        else:
            cluster = f"prod-{z % max(self.spec.clusters, 1)}"
            scopes = [{"id": 10 * z, "targetType": "kubernetes", "rules": f'clusterId in ("{cluster}")'},
                      {"id": 10 * z + 1, "targetType": "aws", "rules": 'account in ("123456789012")'}][: 1 + z % 2]
        return {"id": ZONE_ID_BASE + z, "name": "Entire Infrastructure" if z == 0 else f"zone-{z}",
                "description": "All resources" if z == 0 else None,
                "author": "Sysdig" if z == 0 else "user0@example.com",
                "lastModifiedBy": None if z == 0 else "user1@example.com",
                "lastUpdated": _epoch_ms(_TEAMS_EPOCH + timedelta(days=z)), "isSystem": z == 0, "scopes": scopes}

    def sso_settings(self) -> list[dict[str, Any]]:
        """SAML for Secure (on), OpenID for Monitor (off), whose config holds a client secret."""
        created = _iso(_SSO_EPOCH)
        return [
            {"id": 1, "product": "secure", "isActive": True, "createUserOnLogin": True,
             "isPasswordLoginEnabled": False, "isSingleLogoutEnabled": True, "isGroupMappingEnabled": True,
             "groupMappingAttributeName": "groups", "integrationName": "Okta",
             "config": {"type": "SAML", "metadataUrl": "https://acme.okta.example/app/sysdig/sso/saml/metadata",
                        "emailParameter": "email", "isSignatureValidationEnabled": True},
             "dateCreated": created, "lastUpdated": created, "version": 2},
            {"id": 2, "product": "monitor", "isActive": False, "createUserOnLogin": False,
             "isPasswordLoginEnabled": True, "isSingleLogoutEnabled": False, "isGroupMappingEnabled": False,
             "groupMappingAttributeName": None, "integrationName": None,
             "config": {"type": "OPENID", "issuerUrl": "https://login.acme.example", "clientId": "sysdig-monitor",
                        "clientSecret": self.sso_client_secret()},
             "dateCreated": created, "lastUpdated": created, "version": 1},
        ]

    def sso_client_secret(self) -> str:
        return "oidc-" + _sha256(f"{self.spec.seed}:oidc-secret")[:24]

    def ip_filter(self, f: int) -> dict[str, Any]:
        return {"id": IP_FILTER_ID_BASE + f, "ipRange": f"10.{f}.0.0/16" if f % 2 == 0 else f"203.0.113.{f}/32",
                "note": None if f % 3 == 1 else f"office {f}", "isEnabled": f % 3 != 2, "isAllowed": True,
                "lastUpdated": _iso(_TEAMS_EPOCH + timedelta(days=f))}

    # -- inventory -----------------------------------------------------------------------------
    def _inventory_item(self, kind: str, n: int, name: str, platform: str, type_: str,
                        metadata: dict[str, Any]) -> dict[str, Any]:
        critical, high = n % 4, 2 + n % 5
        summary = {"criticalSeverityCount": critical, "highSeverityCount": high, "mediumSeverityCount": 5,
                   "lowSeverityCount": 7, "negligibleSeverityCount": 1, "hasExploit": n % 3 == 0}
        zone = {"id": ZONE_ID_BASE, "name": "Entire Infrastructure"}
        return {"hash": _sha256(f"{self.spec.seed}:{kind}:{n}")[:40], "name": name, "platform": platform,
                "type": type_, "category": "Compute", "lastSeen": int(_SCANS_EPOCH.timestamp()) + 3600 * n,
                "isExposed": n % 5 == 0, "validatedExposure": False,
                "labels": [f"env={'prod' if n % 2 == 0 else 'dev'}"],
                "metadata": metadata, "resourceOrigin": "Deployed",
                "posturePolicySummary": {"passPercentage": 80, "policies": []},
                "vulnerabilitySummary": summary, "inUseVulnerabilitySummary": {**summary, "criticalSeverityCount": critical // 2},
                "zones": [zone], "containerInfo": []}

    def cluster(self, c: int) -> dict[str, Any]:
        distribution = _DISTRIBUTIONS[c % 4]
        metadata: dict[str, Any] = {"distribution": distribution, "version": f"1.{28 + c % 4}"}
        if distribution == "EKS":
            metadata |= {"region": "us-east-1", "arn": f"arn:aws:eks:us-east-1:123456789012:cluster/prod-{c}"}
        elif distribution == "AKS":
            metadata |= {"region": "westeurope", "resourceId": (
                f"/subscriptions/{self._subscription()}/resourceGroups/Prod-RG/providers/"
                f"Microsoft.ContainerService/managedClusters/prod-{c}")}
        elif distribution == "GKE":  # its id in resourceId, a documented field (not clusterId: our reading)
            metadata |= {"region": "us-central1", "resourceId": _sha256(f"{self.spec.seed}:gke:{c}")[:32]}
        return self._inventory_item("cluster", c, f"prod-{c}", "Kubernetes", "Cluster", metadata)

    def inventory_fields(self, kind: str, n: int) -> dict[str, str]:
        """What the inventory filters on, without building the item."""
        in_cluster = kind == "cluster" or n % (self.spec.clusters + 1) < self.spec.clusters
        return {"type": "Cluster" if kind == "cluster" else "Node" if in_cluster else "Host",
                "platform": "Kubernetes" if in_cluster else "Linux", "category": "Compute"}

    def host(self, h: int) -> dict[str, Any]:
        """Nodes of the clusters in turn, every (clusters + 1)th a host of no cluster; each group of
        clusters + 1 runs on one cloud in turn (AWS, Azure, GCP, none). A node names its machine in
        Kubernetes' providerID (our reading); a host of no cluster in the documented inventory
        fields: an EC2 instance's arn, an Azure VM's or a Compute Engine instance's resourceId."""
        group = self.spec.clusters + 1
        cluster, cloud = h % group, _CLOUDS[(h // group) % 4]
        name, instance = f"node-{h}", f"i-{_sha256(f'{self.spec.seed}:ec2:{h}')[:17]}"
        vm = (f"/subscriptions/{self._subscription()}/resourceGroups/MC_Prod-RG/providers/"
              f"Microsoft.Compute/virtualMachines/{name}")
        in_cluster = cluster < self.spec.clusters
        if in_cluster:
            machine = {"providerID": {"aws": f"aws:///us-east-1a/{instance}", "azure": f"azure://{vm}",
                                      "gce": f"gce://acme-prod/us-central1-a/{name}", "none": None}[cloud]}
        else:
            machine = {"aws": {"arn": f"arn:aws:ec2:us-east-1:123456789012:instance/{instance}"},
                       "azure": {"resourceId": vm},
                       "gce": {"resourceId": f"//compute.googleapis.com/projects/acme-prod/zones/us-central1-a/"
                                             f"instances/{name}"},
                       "none": {}}[cloud]
        metadata = {"cluster": f"prod-{cluster}" if in_cluster else None,
                    "nodeType": ("Master" if h % 5 == 0 else "Worker") if in_cluster else None,
                    "os": "Ubuntu 22.04.4 LTS", "kernelVersion": f"6.5.0-{h}-generic", "agentVersion": "13.6.0",
                    **machine}
        return self._inventory_item("host", h, name, "Kubernetes" if in_cluster else "Linux",
                                    "Node" if in_cluster else "Host", metadata)

    def _subscription(self) -> str:
        return str(uuid.UUID(bytes=hashlib.sha256(f"{self.spec.seed}:azure".encode()).digest()[:16], version=4))


class SysdigOrg(PlatformMixin):
    """The organisation described by an `OrgSpec`; records are built on demand by index."""

    def __init__(self, spec: OrgSpec = OrgSpec()) -> None:
        self.spec = spec
        self._removed: tuple[int, ...] = ()  # sorted user indices; replaced, never mutated
        self._promoted: frozenset[int] = frozenset()  # user indices made customer admins
        self._disabled: frozenset[int] = frozenset()  # user indices whose login was disabled
        self._left: frozenset[tuple[int, int]] = frozenset()  # (team index, user index) memberships ended
        self._joined: frozenset[tuple[int, int]] = frozenset()  # (team index, user index) memberships added
        self.created_service_accounts: tuple[dict[str, Any], ...] = ()  # after the generated ones
        self.created_access_keys: tuple[dict[str, Any], ...] = ()
        self._removed_teams: tuple[int, ...] = ()  # sorted team indices
        self._lock = threading.Lock()

    def _uuid(self, purpose: str) -> str:
        digest = hashlib.sha256(f"{self.spec.seed}:uuid:{purpose}".encode()).digest()
        return str(uuid.UUID(bytes=digest[:16], version=4))

    # -- users -----------------------------------------------------------------------------
    def user_id(self, i: int) -> int:
        first_duplicate = self.spec.users - self.spec.duplicate_users
        return USER_ID_BASE + (i - first_duplicate if i >= first_duplicate else i)

    def user_indices_for_id(self, user_id: int) -> list[int]:
        """Every index carrying this id (two when duplicated), removed or not."""
        x = user_id - USER_ID_BASE
        first_duplicate = self.spec.users - self.spec.duplicate_users
        indices = [x] if 0 <= x < first_duplicate else []
        if 0 <= x < self.spec.duplicate_users:
            indices.append(first_duplicate + x)
        return indices

    def remove_user(self, user_id: int) -> bool:
        """Remove every user with this id; False if the id never existed."""
        indices = self.user_indices_for_id(user_id)
        with self._lock:
            self._removed = tuple(sorted(set(self._removed).union(indices)))
        return bool(indices)

    def is_present(self, i: int) -> bool:
        return 0 <= i < self.spec.users and i not in self._removed

    def users(self) -> Sequence[int]:
        """Indices of the surviving users, in order."""
        return Survivors(0, self.spec.users, 1, self._removed)

    def is_admin(self, i: int) -> bool:
        return i < self.spec.admins or i in self._promoted

    # -- changes between syncs ---------------------------------------------------------------
    def update_user(self, user_id: int, admin: bool | None = None, enabled: bool | None = None) -> bool:
        """Make a user admin (in every team, as Sysdig lists admins) or disable their login."""
        indices = self.user_indices_for_id(user_id)
        with self._lock:
            if admin:
                self._promoted |= set(indices)
            if enabled is False:
                self._disabled |= set(indices)
        return bool(indices)

    def join_team(self, team_id: int, user_id: int) -> bool:
        """The user becomes a member of the team (with the role the memberships give them)."""
        j, indices = self.team_index(team_id), [i for i in self.user_indices_for_id(user_id) if self.is_present(i)]
        if j is None or not indices:
            return False
        with self._lock:
            self._joined |= {(j, i) for i in indices}
            self._left -= {(j, i) for i in indices}
        return True

    def create_service_account(self, name: str, system_roles: list[str], expires: str | None) -> dict[str, Any]:
        """A new global service account; returns it with its API key (the secret it signs in with)."""
        with self._lock:
            number = len(self.created_service_accounts)
            created = _iso(datetime.now(UTC).replace(microsecond=0))
            account = {"id": SERVICE_ACCOUNT_ID_BASE + 5000 + number, "name": name, "teamId": None, "teamRole": None,
                       "systemRoles": list(system_roles), "dateCreated": created, "lastUpdated": created,
                       "lastUsed": None, "expirationDate": expires}
            self.created_service_accounts += (account,)
        return {**account, "apiKey": self._uuid(f"service-account-key:{number}")}

    def create_access_key(self, team_id: int | None, agent_limit: int | None) -> dict[str, Any]:
        """A new agent access key, its secret value included (as the API answers)."""
        with self._lock:
            number = len(self.created_access_keys)
            key = {"id": ACCESS_KEY_ID_BASE + 5000 + number, "isEnabled": True,
                   "accessKey": self._uuid(f"created-access-key:{number}"),
                   "dateCreated": _iso(datetime.now(UTC).replace(microsecond=0)), "dateDisabled": None,
                   "agentLimit": agent_limit, "agentReservation": None, "teamId": team_id, "metadata": {}}
            self.created_access_keys += (key,)
        return dict(key)

    def leave_team(self, team_id: int, user_id: int) -> bool:
        j, indices = self.team_index(team_id), self.user_indices_for_id(user_id)
        if j is None or not any(i in self.members(j, with_admins=True) for i in indices):
            return False
        with self._lock:
            self._left |= {(j, i) for i in indices}
        return True

    def remove_team(self, team_id: int) -> bool:
        j = self.team_index(team_id)
        if j is None:
            return False
        with self._lock:
            self._removed_teams = tuple(sorted({*self._removed_teams, j}))
        return True

    def _names(self, i: int) -> tuple[str, str | None]:
        rng = random.Random(f"{self.spec.seed}:user:{i}")
        first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
        return first, (None if i % 17 == 16 else last)

    def _user_created(self, i: int) -> datetime:
        return _USERS_EPOCH + timedelta(hours=i)

    def _activation_status(self, i: int) -> str:
        return "pending" if i % 11 == 10 else "confirmed"

    def _is_enabled(self, i: int) -> bool:
        return i % 7 != 6 and i not in self._disabled

    def _products(self, i: int) -> list[str]:
        return ["SDC", "SDS"] if i % 2 == 0 else ["SDS"]

    def _last_seen_ms(self, i: int) -> int | None:
        return None if i % 4 == 3 else _LAST_SEEN_EPOCH_MS + i * 60_000

    def _system_role(self, i: int) -> str:
        return "ROLE_CUSTOMER" if self.is_admin(i) else "ROLE_USER"

    def public_user(self, i: int) -> dict[str, Any]:
        first, last = self._names(i)
        created = self._user_created(i)
        updated = None if i % 5 == 4 else _iso(created + timedelta(days=1, minutes=i))
        return {
            "id": self.user_id(i), "email": f"user{i}@example.com",
            "firstName": first, "lastName": last,
            "isAdmin": self.is_admin(i), "isEnabled": self._is_enabled(i),
            "activationStatus": self._activation_status(i),
            "dateCreated": _iso(created), "lastUpdated": updated,
            "version": 1 + i % 3,
        }

    def light_user(self, i: int) -> dict[str, Any]:
        first, last = self._names(i)
        return {
            "id": self.user_id(i), "version": 1 + i % 3, "username": f"user{i}@example.com",
            "enabled": self._is_enabled(i), "systemRole": self._system_role(i),
            "firstName": first, "lastName": last,
            "lastSeenOnSecure": self._last_seen_ms(i),
            "dateCreated": _epoch_ms(self._user_created(i)),
            "status": self._activation_status(i), "products": self._products(i),
        }

    def legacy_user(self, i: int) -> dict[str, Any]:
        """The `/api/users/{id}` shape, sensitive fields included (clients must scrub them)."""
        first, last = self._names(i)
        created = self._user_created(i)
        access_key = self._uuid(f"user-access-key:{i}")
        return {
            "id": self.user_id(i), "username": f"user{i}@example.com",
            "name": " ".join(part for part in (first, last) if part),
            "firstName": first, "lastName": last, "systemRole": self._system_role(i),
            "enabled": self._is_enabled(i), "status": self._activation_status(i),
            "products": self._products(i), "version": 1 + i % 3,
            "currentTeam": TEAM_ID_BASE, "dateCreated": _epoch_ms(created),
            "lastSeenOnSecure": self._last_seen_ms(i), "teamRoles": self._team_roles(i),
            "accessKey": access_key, "agentInstallParams": {"accessKey": access_key},
            "intercomUserIdHash": _sha256(f"{self.spec.seed}:intercom:{i}"),
            "customer": self._customer(),
        }

    def _customer(self) -> dict[str, Any]:
        return {
            "id": self.spec.customer_id, "name": self.spec.customer_name,
            "externalId": self._uuid("customer-external-id"),
            "accessKey": self._uuid("customer-access-key"),
            "dateCreated": _epoch_ms(_TEAMS_EPOCH),
        }

    def _team_roles(self, i: int) -> list[dict[str, Any]]:
        teams = range(self.spec.teams) if self.is_admin(i) else self._teams_of_member(i)
        return [self._team_role(j, i) for j in teams]

    def _teams_of_member(self, i: int) -> list[int]:
        return [i % self.spec.teams] if self.spec.teams else []

    def _team_role(self, j: int, i: int) -> dict[str, Any]:
        membership = self.membership(j, i)
        role = membership["standardTeamRole"] or str(membership["customTeamRoleId"])
        return {
            "teamId": TEAM_ID_BASE + j, "teamName": self._team_name(j), "teamTheme": TEAM_THEME,
            "userId": self.user_id(i), "userName": f"user{i}@example.com",
            "role": role, "admin": self.is_admin(i),
        }

    # -- teams -----------------------------------------------------------------------------
    def teams(self) -> Sequence[int]:
        return Survivors(0, self.spec.teams, 1, self._removed_teams)

    def team_index(self, team_id: int) -> int | None:
        j = team_id - TEAM_ID_BASE
        return j if 0 <= j < self.spec.teams and j not in self._removed_teams else None

    def _team_name(self, j: int) -> str:
        return {0: "Secure Operations", 1: "Monitor Operations"}.get(j, f"team-{j:04d}")

    def _team_description(self, j: int) -> str | None:
        if j < 2:
            return ("Default Secure team", "Default Monitor team")[j]
        return None if j % 3 == 0 else f"Team number {j}"

    def _team_product(self, j: int) -> str:
        if j < 2:
            return ("secure", "monitor")[j]
        return "secure" if j % 2 == 0 else "monitor"

    def _team_permissions(self, j: int) -> dict[str, bool]:
        return {
            "hasSysdigCaptures": j % 2 == 0, "hasInfrastructureEvents": j % 3 == 0,
            "hasAwsData": j % 4 == 0, "hasRapidResponse": j == 0,
            "hasAgentCli": j % 2 == 1, "hasBeaconMetrics": False,
        }

    def _team_created(self, j: int) -> datetime:
        return _TEAMS_EPOCH + timedelta(days=j)

    def public_team(self, j: int) -> dict[str, Any]:
        created = self._team_created(j)
        return {
            "id": TEAM_ID_BASE + j, "name": self._team_name(j),
            "description": self._team_description(j),
            "isImmutableTeam": j < 2, "isDefaultTeam": j == 0,
            **self._team_role_default(j),
            "product": self._team_product(j),
            "uiSettings": {"entryPoint": {"module": "Explore"}, "theme": TEAM_THEME},
            "isAllZones": not self.team_zones(j), "zoneIds": self.team_zones(j), "scopes": [],
            "additionalTeamPermissions": self._team_permissions(j),
            "dateCreated": _iso(created), "lastUpdated": _iso(created + timedelta(days=2)),
            "version": 1,
        }

    def _team_role_default(self, j: int) -> dict[str, Any]:
        """Every fourth team gives its members a custom role by default, the others a standard one."""
        if j % 4 == 2 and self.spec.roles:
            return {"standardTeamRole": None, "customTeamRoleId": ROLE_ID_BASE + j % self.spec.roles}
        return {"standardTeamRole": _TEAM_DEFAULT_ROLES[j % 3], "customTeamRoleId": None}

    def team_zones(self, j: int) -> list[int]:
        """The zones a team is limited to: none (all zones) for the two built-in teams."""
        custom = self.spec.zones - 1
        return [] if j < 2 or custom < 1 else [ZONE_ID_BASE + 1 + j % custom]

    def legacy_team(self, j: int) -> dict[str, Any]:
        """The `/api/v2/teams/light` shape (no members, but a member count)."""
        created = self._team_created(j)
        permissions = self._team_permissions(j)
        return {
            "id": TEAM_ID_BASE + j, "version": 1, "customerId": self.spec.customer_id,
            "name": self._team_name(j), "description": self._team_description(j),
            "theme": TEAM_THEME, "show": "host", "origin": "SYSDIG",
            "immutable": j < 2, "default": j == 0,
            "defaultTeamRole": self._team_role_default(j)["standardTeamRole"],
            "canUseSysdigCapture": permissions["hasSysdigCaptures"],
            "canUseAgentCli": permissions["hasAgentCli"],
            "canUseCustomEvents": permissions["hasInfrastructureEvents"],
            "canUseAwsMetrics": permissions["hasAwsData"],
            "canUseBeaconMetrics": permissions["hasBeaconMetrics"],
            "canUseRapidResponse": permissions["hasRapidResponse"],
            "userCount": len(self.members(j, with_admins=True)),
            "entryPoint": {"module": "Explore"},
            "products": ["SDS"] if self._team_product(j) == "secure" else ["SDC"],
            "properties": {}, "namespaceFilters": {},
            "dateCreated": _epoch_ms(created), "lastUpdated": _epoch_ms(created + timedelta(days=2)),
        }

    # -- memberships -----------------------------------------------------------------------
    def members(self, j: int, with_admins: bool) -> Sequence[int]:
        """User indices of team j: admins first (if asked), then its non-admin members."""
        if self._promoted or self._left or self._joined:  # changed by a test: small organisations, listed plainly
            return self._changed_members(j, with_admins)
        removed = self._removed  # one snapshot, so both parts agree
        admins, teams = self.spec.admins, self.spec.teams
        first_member = admins + (j - admins) % teams
        removed_members = [i for i in removed if i >= admins and i % teams == j]
        members = Survivors(first_member, self.spec.users, teams, removed_members)
        if not with_admins:
            return members
        return Concat(Survivors(0, admins, 1, [i for i in removed if i < admins]), members)

    def _changed_members(self, j: int, with_admins: bool) -> list[int]:
        removed, left = set(self._removed), {i for jj, i in self._left if jj == j}
        joined = {i for jj, i in self._joined if jj == j}
        admins = sorted({*range(min(self.spec.admins, self.spec.users)), *self._promoted} - removed - left)
        regular = [i for i in range(self.spec.admins, self.spec.users)
                   if (i % self.spec.teams == j or i in joined) and not self.is_admin(i) and i not in removed | left]
        return admins + regular if with_admins else regular

    def membership(self, j: int, i: int) -> dict[str, Any]:
        role: str | None
        if self.is_admin(i):
            role, custom_role = "ROLE_TEAM_MANAGER", None
        elif i % 13 == 12:
            role, custom_role = None, CUSTOM_TEAM_ROLE_ID
        else:
            role, custom_role = _MEMBER_ROLES[i % 3], None
        return {"teamId": TEAM_ID_BASE + j, "userId": self.user_id(i),
                "standardTeamRole": role, "customTeamRoleId": custom_role}

    # -- scans -----------------------------------------------------------------------------
    def scans(self, stage: str | None = None) -> Sequence[int]:
        """Scan indices of one stage, or of all stages (the legacy engine)."""
        if stage is None:
            return range(self.spec.scans)
        return range(STAGES.index(stage), self.spec.scans, len(STAGES))

    def _image_hex(self, k: int) -> str:
        return _sha256(f"{self.spec.seed}:image:{k}")

    def _pull_string(self, k: int) -> str:
        return f"{_REGISTRIES[k % 4]}/acme/service-{k % 97}:1.{k % 10}.{k % 7}"

    def _scan_created(self, k: int) -> datetime:
        return _SCANS_EPOCH + timedelta(minutes=k)

    def _vuln_counts(self, k: int) -> tuple[dict[str, int], dict[str, int]]:
        return self.results.counts(k)

    def _result_id(self, k: int) -> str:
        return _sha256(f"{self.spec.seed}:scan:{k}")[:32]

    @cached_property
    def results(self) -> ResultCatalogue:
        return ResultCatalogue(self.spec.seed, self.spec.packages_per_scan)

    @cached_property
    def _scan_of_result(self) -> dict[str, int]:
        return {self._result_id(k): k for k in range(self.spec.scans)}

    def full_result(self, result_id: str) -> bytes | None:
        """`GET /secure/vulnerability/v1/results/{resultId}`, encoded; None for an unknown id."""
        k = self._scan_of_result.get(result_id)
        if k is None:
            return None
        stage = STAGES[k % len(STAGES)]
        metadata = {"pullString": self._pull_string(k), "imageId": "sha256:" + self._image_hex(k),
                    "digest": "sha256:" + _sha256(f"{self.spec.seed}:digest:{k}"), "baseOs": "debian 12.8",
                    "size": 80_000_000 + k, "os": "linux", "architecture": "amd64", "labels": {},
                    "author": "acme builds", "createdAt": _iso(self._scan_created(k))}
        policy = None if stage == "registry" else _POLICY_RESULTS[k % 4]
        return self.results.body(k, stage, metadata, policy)

    def runtime_result(self, k: int) -> dict[str, Any]:
        totals, running = self._vuln_counts(k)
        return {
            "resultId": self._result_id(k), "resourceId": "sha256:" + self._image_hex(k),
            "sbomId": f"sbom-{k}", "mainAssetName": self._pull_string(k),
            "policyEvaluationResult": _POLICY_RESULTS[k % 4],
            "isRiskSpotlightEnabled": k % 2 == 0,
            "scope": {
                "asset.type": "workload", "kubernetes.cluster.name": f"prod-{k % 3}",
                "kubernetes.namespace.name": f"ns-{k % 5}",
                "kubernetes.workload.name": f"service-{k % 97}",
                "kubernetes.workload.type": "deployment",
            },
            "vulnTotalBySeverity": totals, "runningVulnTotalBySeverity": running,
        }

    def pipeline_result(self, k: int) -> dict[str, Any]:
        return {
            "resultId": self._result_id(k), "pullString": self._pull_string(k),
            "imageId": "sha256:" + self._image_hex(k),
            "createdAt": _iso_micros(self._scan_created(k)),
            "vulnTotalBySeverity": self._vuln_counts(k)[0],
            "policyEvaluationResult": _POLICY_RESULTS[k % 4],
        }

    def registry_result(self, k: int) -> dict[str, Any]:
        return {
            "resultId": self._result_id(k), "imageId": "sha256:" + self._image_hex(k),
            "vendor": _VENDORS[k % 4], "pullString": self._pull_string(k),
            "vulnTotalBySeverity": self._vuln_counts(k)[0],
            "createdAt": _iso_micros(self._scan_created(k)),
        }

    def stage_result(self, stage: str, k: int) -> dict[str, Any]:
        builders = {"runtime": self.runtime_result, "pipeline": self.pipeline_result,
                    "registry": self.registry_result}
        return builders[stage](k)

    def legacy_scan(self, k: int) -> dict[str, Any]:
        """A `/api/scanning/v1/resultsDirect` row; timestamps in epoch seconds."""
        created = int(self._scan_created(k).timestamp())
        return {
            "analysisStatus": "analyzed", "analyzedAt": created + 30, "createdAt": created,
            "tagDetectedAt": created, "fullTag": self._pull_string(k),
            "registry": _REGISTRIES[k % 4], "repository": f"acme/service-{k % 97}",
            "tag": f"1.{k % 10}.{k % 7}",
            "imageDigest": "sha256:" + _sha256(f"{self.spec.seed}:digest:{k}"),
            "parentDigest": "sha256:" + _sha256(f"{self.spec.seed}:parent:{k}"),
            "imageId": self._image_hex(k), "origin": "sysdig-secure",
            "policyStatus": _LEGACY_POLICY_STATUSES[k % 3],
        }
