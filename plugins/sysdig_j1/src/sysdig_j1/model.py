"""The Sysdig -> JupiterOne data model, declared once.

Everything else is derived from these declarations: the pandas transform (`transform.py`), the JSON
Schemas in `include/schemas/` and the README tables (`schemas.py`), and the Great Expectations
suites (`quality.py`). To add a property, add one `Property` here and run `make schemas`.

A property's value comes from exactly one of:
- `source`: a column of the flattened raw record (nested keys joined with "."); a tuple lists
  alternatives, the first non-null wins (the same entity can come from differently shaped APIs);
- `derive`: the name of a rule in `transform.DERIVATIONS` (values that need logic or context);
- `constant`: the same value on every object.
Types: string, integer, number, boolean, timestamp (epoch milliseconds), string[], integer[]. A
source path may step into a list of objects with `[]`: `scopes[].rules` is the list of every scope's
`rules` (each must be present and of the element type).

The same declarations are the source contract (`contract.py`): each source field's JSON type is
its property's type, key fields have the type `key_type` gives, the fields each derivation rule
reads are declared with the rule itself (`transform.Rule`), and a required property needs one of its
sources (or one of the fields its rule reads) to be present.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TYPES = ("string", "integer", "number", "boolean", "timestamp", "string[]", "integer[]")

# Sysdig's severities, worst first, with the number JupiterOne's Finding class wants (0-10): the
# lower bound of the matching CVSS v3 band, so numericSeverity sorts and filters like a CVSS score.
SEVERITIES: dict[str, int] = {"critical": 9, "high": 7, "medium": 4, "low": 1, "negligible": 0}
VM_STAGES = ("runtime", "pipeline", "registry")  # where Vulnerability Management scans images
# Which findings are published (Sysdig connection extras finding_stages, finding_min_severity).
# What is running is what an attacker can reach, and what a security team fixes first; pipeline
# and registry results repeat the same images' findings many times over. Every severity but
# negligible: "low" CVEs still answer "where is CVE-X running?", negligible ones are noise by the
# feeds' own rating.
DEFAULT_FINDING_STAGES = ("runtime",)
DEFAULT_FINDING_MIN_SEVERITY = "low"


@dataclass(frozen=True)
class Property:
    name: str
    type: str
    description: str
    source: str | tuple[str, ...] | None = None
    derive: str | None = None
    constant: object = None
    required: bool = False
    # Other resources a derivation reads (the team's member count reads the memberships and the
    # users): when one was not extracted, the property's whole type is kept in JupiterOne as a
    # partial dataset, so a value derived from incomplete data is never published.
    from_resources: tuple[str, ...] = ()
    # Sysdig's published response model requires the source field (within its object, when that
    # is present): a record without it breaks the source contract instead of publishing a null.
    api_required: bool = False

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"{self.name}: unknown type {self.type!r}")
        if sum(x is not None for x in (self.source, self.derive, self.constant)) != 1:
            raise ValueError(f"{self.name}: give exactly one of source, derive, constant")
        if self.api_required and len(self.sources) != 1:
            raise ValueError(f"{self.name}: api_required needs exactly one source field")

    @property
    def sources(self) -> tuple[str, ...]:
        return (self.source,) if isinstance(self.source, str) else tuple(self.source or ())

    @property
    def rule(self):
        """Its derivation rule (`transform.Rule`: what it reads and how), None unless derived."""
        from sysdig_j1.transform import DERIVATIONS  # the rules need pandas and the run; the model does not

        return DERIVATIONS[self.derive] if self.derive else None

    @property
    def reads(self) -> tuple[tuple[str, str], ...]:
        """(field, type) of what the property's derivation rule reads; () for sourced properties."""
        return self.rule.reads if self.derive else ()


@dataclass(frozen=True)
class EntityType:
    type: str
    cls: str
    resource: str  # the extract task's resource whose raw records become these entities
    key_source: str | tuple[str, ...]  # raw field(s) behind `_key = <type>:<value>`
    description: str
    properties: tuple[Property, ...]
    # Optional second resource merged in by id (left join): (resource, id field, column prefix).
    enrichment: tuple[str, str, str] | None = None
    key_type: str = "string"  # JSON type of the key field(s) in the API: Sysdig ids are integers
    # Whether entities carry their source record as `_rawData` (and raw pages store it).
    raw_data: bool = True
    # Further resources whose records are entities of this type too: listed by other endpoints,
    # under other permissions (team service accounts), so each can be skipped or switched off alone.
    more_resources: tuple[str, ...] = ()
    # What the change report shows of an entity beside its displayName (and its webLink, if it
    # has one), in this order; a property in REFERS_TO shows the name of the entity it refers to.
    shown: tuple[str, ...] = ()

    @property
    def resources(self) -> tuple[str, ...]:
        return (self.resource, *self.more_resources)

    @property
    def key_sources(self) -> tuple[str, ...]:
        return (self.key_source,) if isinstance(self.key_source, str) else self.key_source

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.properties if p.required)


@dataclass(frozen=True)
class MappedTarget:
    """An entity type this pipeline does not own, reached through a mapped relationship: JupiterOne's
    mapper finds the target whose `_type` and `match` property hold the relationship's target value
    in any integration's data, or creates it from that entity unless `skip_creation`.
    `key_pattern` is what a valid target value looks like; `properties` are templates of the
    target's properties, where `{key}` is the value and `{KEY}` the same upper-cased."""

    type: str
    cls: str
    key_pattern: str
    description: str
    properties: tuple[tuple[str, str], ...] = ()
    match: str = "_key"  # the target property the value is matched on (`_key`, `instanceId`, `arn`)
    skip_creation: bool = False
    key_type: str = "string"

    @property
    def filter_keys(self) -> tuple[tuple[str, ...], ...]:
        return (("_type", self.match),)

    def entity(self, key: str) -> dict[str, str]:
        values = {name: template.format(key=key, KEY=key.upper()) for name, template in self.properties}
        return {"_type": self.type, self.match: key, "_class": self.cls, **values}


@dataclass(frozen=True)
class RelationshipType:
    source: EntityType
    target: EntityType | MappedTarget
    description: str
    cls: str = "HAS"
    # Relationships listed by a resource of their own (team memberships). Without one, the
    # relationship links the single account to every entity of `target`.
    resource: str | None = None
    source_key_field: str | None = None
    target_key_field: str | None = None
    properties: tuple[Property, ...] = field(default_factory=tuple)
    # Mapped relationships (target a MappedTarget): the rule in transform.DERIVATIONS that turns the
    # target_key_field into the target's value (without one, the field is the value); rows with
    # a null value have no target.
    target_key_rule: str | None = None
    # A record whose key field is null has no such relationship (a team without a custom role).
    optional: bool = False
    # The target key field is a list of keys: one relationship per key (a team's zoneIds).
    many: bool = False

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.properties if p.required)

    @property
    def mapped(self) -> bool:
        return isinstance(self.target, MappedTarget)

    @property
    def type(self) -> str:
        """JupiterOne's rule: drop the leading parts of the target type shared with the source."""
        source_parts, target_parts = self.source.type.split("_"), self.target.type.split("_")
        shared = 0
        while (
            shared < min(len(source_parts), len(target_parts) - 1)
            and source_parts[shared] == target_parts[shared]
        ):
            shared += 1
        return f"{self.source.type}_{self.cls.lower()}_{'_'.join(target_parts[shared:])}"


def _p(name: str, type_: str, description: str, **how: object) -> Property:
    return Property(name=name, type=type_, description=description, **how)  # type: ignore[arg-type]


ACCOUNT = EntityType(
    type="sysdig_account",
    cls="Account",
    resource="account",
    key_source="customer.id",
    key_type="integer",
    description="The Sysdig customer (tenant) the API token belongs to.",
    properties=(
        _p("id", "string", "Sysdig customer id.", source="customer.id", required=True),
        _p("name", "string", "Customer name, else the connection's account_name, else 'Sysdig account <id>'.",
           derive="account_name", required=True),
        _p("displayName", "string", "Same as name.", derive="account_name", required=True),
        _p("externalId", "string", "Sysdig external customer id (filled for admin tokens).",
           source="customer.externalId"),
        _p("createdOn", "timestamp", "When the customer was created.", source="customer.dateCreated"),
        _p("accessURL", "string", "Base URL of the Sysdig application.", derive="app_url"),
        _p("webLink", "string", "Link to the Sysdig application.", derive="app_url"),
    ),
)

USER = EntityType(
    type="sysdig_user",
    cls="User",
    resource="users",
    shown=("email",),
    key_source="id",
    key_type="integer",
    description="A Sysdig user, from /platform/v1/users enriched by /api/v2/users/light.",
    enrichment=("users_light", "id", "light."),
    properties=(
        _p("id", "string", "Sysdig user id.", source="id", required=True),
        _p("name", "string", "Login name (e-mail), as the original integration used.", source="email", required=True),
        _p("displayName", "string", "First and last name, else the e-mail.", derive="user_display_name",
           required=True),
        _p("username", "string", "Login name (e-mail).", source="email", required=True),
        _p("email", "string", "E-mail address.", source="email", required=True),
        _p("firstName", "string", "First name.", source="firstName"),
        _p("lastName", "string", "Last name.", source="lastName"),
        _p("active", "boolean", "True only for a confirmed and enabled user.", derive="user_active", required=True),
        _p("admin", "boolean", "Customer administrator (isAdmin).", source="isAdmin", required=True),
        _p("enabled", "boolean", "Login enabled.", source=("isEnabled", "light.enabled")),
        _p("status", "string", "Activation status (e.g. confirmed, pending).",
           source=("activationStatus", "light.status")),
        _p("systemRole", "string", "ROLE_CUSTOMER (admin) or ROLE_USER, from the light user list.",
           source="light.systemRole"),
        _p("products", "string[]", "Sysdig products the user can use (SDC Monitor, SDS Secure).",
           source="light.products"),
        _p("lastSeenOnSecure", "timestamp", "Last activity in Sysdig Secure.", source="light.lastSeenOnSecure"),
        _p("createdOn", "timestamp", "When the user was created.", source="dateCreated"),
        _p("updatedOn", "timestamp", "When the user was last updated.", source="lastUpdated"),
        _p("version", "integer", "Sysdig record version.", source="version"),
        _p("webLink", "string", "The user's page in Sysdig settings.", derive="user_web_link"),
    ),
)

TEAM = EntityType(
    type="sysdig_team",
    cls="Team",
    resource="teams",
    key_source="id",
    key_type="integer",
    description="A Sysdig team, from /platform/v1/teams.",
    properties=(
        _p("id", "string", "Sysdig team id.", source="id", required=True),
        _p("name", "string", "Team name (unique).", source="name", required=True),
        _p("displayName", "string", "Team name.", source="name", required=True),
        _p("description", "string", "Team description.", source="description"),
        _p("default", "boolean", "The customer's default team (isDefaultTeam).", source="isDefaultTeam"),
        _p("immutable", "boolean", "Built-in team that cannot be changed (isImmutableTeam).",
           source="isImmutableTeam"),
        _p("defaultTeamRole", "string", "Standard role given to members by default.", source="standardTeamRole"),
        _p("customTeamRoleId", "integer", "Custom role given to members by default.", source="customTeamRoleId"),
        _p("product", "string", "Product the team belongs to (secure or monitor).", source="product"),
        _p("allZones", "boolean", "Members see every zone (otherwise only the zones the team USES).",
           source="isAllZones"),
        _p("canUseRapidResponse", "boolean", "Members may use Rapid Response.",
           source="additionalTeamPermissions.hasRapidResponse"),
        _p("canUseSysdigCapture", "boolean", "Members may take Sysdig captures.",
           source="additionalTeamPermissions.hasSysdigCaptures"),
        _p("canUseAgentCli", "boolean", "Members may use the agent CLI.",
           source="additionalTeamPermissions.hasAgentCli"),
        _p("canUseAwsMetrics", "boolean", "Members may see AWS data.", source="additionalTeamPermissions.hasAwsData"),
        _p("canUseBeaconMetrics", "boolean", "Members may see beacon metrics.",
           source="additionalTeamPermissions.hasBeaconMetrics"),
        _p("canUseCustomEvents", "boolean", "Members may see infrastructure events.",
           source="additionalTeamPermissions.hasInfrastructureEvents"),
        _p("entryPointModule", "string", "UI module the team lands on.", source="uiSettings.entryPoint.module"),
        _p("theme", "string", "Team colour.", source="uiSettings.theme"),
        _p("userCount", "integer", "Number of members, counted from the team memberships.", derive="team_user_count",
           from_resources=("team_memberships", "users")),
        _p("createdOn", "timestamp", "When the team was created.", source="dateCreated"),
        _p("updatedOn", "timestamp", "When the team was last updated.", source="lastUpdated"),
        _p("version", "integer", "Sysdig record version.", source="version"),
    ),
)

IMAGE_SCAN = EntityType(
    type="sysdig_image_scan",
    cls="Assessment",
    resource="image_scans",
    shown=("stage", "policyStatus"),
    # resultId for Vulnerability Management results; legacy resultsDirect rows only have imageId.
    key_source=("resultId", "imageId"),
    description="A container image scan result (runtime, pipeline or registry; or legacy scanning).",
    properties=(
        _p("id", "string", "Scan result id.", source=("resultId", "imageId"), required=True),
        _p("name", "string", "Image pull string.", source=("pullString", "mainAssetName", "fullTag"), required=True),
        _p("displayName", "string", "Image pull string.", source=("pullString", "mainAssetName", "fullTag"),
           required=True),
        _p("category", "string", "Assessment category.", constant="Image Scan", required=True),
        _p("summary", "string", "Assessment summary.", constant="Image Scan", required=True),
        _p("internal", "boolean", "Assessment done by an internal tool.", constant=False, required=True),
        _p("fullTag", "string", "Image pull string.", source=("pullString", "mainAssetName", "fullTag"),
           required=True),
        _p("registry", "string", "Registry host parsed from the pull string.", derive="image_registry"),
        _p("repository", "string", "Repository parsed from the pull string.", derive="image_repository"),
        _p("tag", "string", "Tag parsed from the pull string.", derive="image_tag"),
        _p("imageId", "string", "Image id (sha256 digest of the config).", source=("imageId", "resourceId")),
        _p("stage", "string", "Where the scan ran: runtime, pipeline, registry (or legacy).", source="_partition",
           required=True),
        _p("policyStatus", "string", "Policy evaluation result (none for registry scans).",
           source=("policyEvaluationResult", "policyStatus")),
        _p("vendor", "string", "Registry vendor (registry scans).", source="vendor"),
        _p("criticalVulnerabilities", "integer", "Critical vulnerabilities found.",
           source="vulnTotalBySeverity.critical"),
        _p("highVulnerabilities", "integer", "High vulnerabilities found.", source="vulnTotalBySeverity.high"),
        _p("mediumVulnerabilities", "integer", "Medium vulnerabilities found.", source="vulnTotalBySeverity.medium"),
        _p("lowVulnerabilities", "integer", "Low vulnerabilities found.", source="vulnTotalBySeverity.low"),
        _p("negligibleVulnerabilities", "integer", "Negligible vulnerabilities found.",
           source="vulnTotalBySeverity.negligible"),
        *(_p(f"running{level.capitalize()}Vulnerabilities", "integer",
             f"{level.capitalize()} vulnerabilities in packages in use at runtime (runtime results only).",
             source=f"runningVulnTotalBySeverity.{level}") for level in SEVERITIES),
        _p("createdOn", "timestamp", "When the scan ran (runtime results have no time).", source="createdAt"),
    ),
)

FINDING = EntityType(
    type="sysdig_finding",
    cls="Finding",
    resource="findings",
    shown=("severity", "cisaKev", "packageName", "packageVersion", "imageScanId"),
    # Sysdig's reference ids are local to one response, so the key is computed from what the
    # finding is: see `findings.finding_id`.
    key_source="findingId",
    # A fleet has a million findings and every field of one is a property: its record as _rawData
    # would double the upload and the extract's work for nothing a query can use.
    raw_data=False,
    description="One vulnerability of one package in one image scan result, from "
                "/secure/vulnerability/v1/results/{resultId} (settings decide which stages and severities).",
    properties=(
        _p("id", "string", "Finding id: a hash of the scan result, the package and the vulnerability (stable "
                           "across runs).", source="findingId", required=True),
        _p("name", "string", "Vulnerability name: a CVE id, or another advisory id (e.g. GHSA-...).",
           source="vulnerability.name", required=True, api_required=True),
        _p("displayName", "string", "'<vulnerability> in <package> <version>'.", derive="finding_display_name",
           required=True),
        _p("category", "string", "Finding category.", constant="Package Vulnerability", required=True),
        _p("severity", "string", "Sysdig severity: critical, high, medium, low or negligible.",
           source="vulnerability.severity", required=True, api_required=True),
        _p("numericSeverity", "integer", "Severity as 0-10: critical 9, high 7, medium 4, low 1, negligible 0 "
                                         "(the lower bounds of the CVSS v3 bands).",
           derive="finding_numeric_severity", required=True),
        _p("open", "boolean", "False while an active risk acceptance covers the finding.", derive="finding_open",
           required=True),
        _p("imageScanId", "string", "The scan result the finding is part of.", source="resultId", required=True),
        _p("stage", "string", "Stage of the scan result: runtime, pipeline or registry.", source="_partition",
           required=True),
        _p("packageName", "string", "Vulnerable package.", source="package.name", required=True, api_required=True),
        _p("packageVersion", "string", "Installed version of the package.", source="package.version", required=True,
           api_required=True),
        _p("packageType", "string", "Package type (os, java, python, javascript, golang, ...).",
           source="package.type", required=True, api_required=True),
        _p("packagePath", "string", "Where the package is in the image (language packages).", source="package.path"),
        _p("packageLicense", "string", "Package licence.", source="package.license"),
        _p("inUse", "boolean", "The package is used by a running process (runtime results).",
           source="package.isRunning"),
        _p("fixVersion", "string", "First package version that fixes the vulnerability.",
           source="vulnerability.fixVersion"),
        _p("fixable", "boolean", "A fix version exists.", derive="finding_fixable", required=True),
        _p("suggestedFix", "string", "Version Sysdig suggests upgrading the package to.", source="package.suggestedFix"),
        _p("exploitable", "boolean", "A public exploit exists.", source="vulnerability.exploitable", api_required=True),
        _p("exploitPublishedOn", "timestamp", "When the exploit was published.",
           source="vulnerability.exploit.publicationDate"),
        _p("cisaKev", "boolean", "Listed in CISA's Known Exploited Vulnerabilities catalogue.", source="cisaKev"),
        _p("cvssScore", "number", "CVSS base score.", source="vulnerability.cvssScore.score", api_required=True),
        _p("cvssVersion", "string", "CVSS version of the score.", source="vulnerability.cvssScore.version",
           api_required=True),
        _p("cvssVector", "string", "CVSS vector.", source="vulnerability.cvssScore.vector"),
        _p("epssScore", "number", "EPSS probability of exploitation in the next 30 days (FIRST.org).",
           source="epss.score"),
        _p("epssPercentile", "number", "EPSS percentile (FIRST.org).", source="epss.percentile"),
        _p("provider", "string", "Vulnerability feed Sysdig took the data from.", source="vulnerability.mainProvider"),
        _p("disclosedOn", "timestamp", "When the vulnerability was disclosed.", source="vulnerability.disclosureDate"),
        _p("solutionOn", "timestamp", "When a fix became available.", source="vulnerability.solutionDate"),
        _p("riskAccepted", "boolean", "An active risk acceptance covers the finding.", derive="finding_risk_accepted",
           required=True),
        _p("riskAcceptReason", "string", "Reason given for the risk acceptance.", source="riskAccept.reason"),
        _p("riskAcceptDescription", "string", "Description of the risk acceptance.", source="riskAccept.description"),
        _p("riskAcceptExpiresOn", "timestamp", "When the risk acceptance expires.", source="riskAccept.expirationDate"),
        _p("layerDigest", "string", "Digest of the image layer that added the package.", source="layer.digest",
           api_required=True),
        _p("fromBaseImage", "boolean", "The layer comes from a base image.", derive="finding_from_base_image"),
        _p("baseImages", "string[]", "Pull strings of the base images the layer belongs to.", source="layer.baseImages"),
    ),
)

CVE = MappedTarget(
    type="cve",
    cls="Vulnerability",
    key_pattern=r"^cve-\d{4}-\d{4,}$",
    description="JupiterOne's shared CVE entity, which every scanner integration links its findings to.",
    properties=(("name", "{KEY}"), ("displayName", "{KEY}"), ("webLink", "https://nvd.nist.gov/vuln/detail/{KEY}")),
)

# -- who and what can reach the tenant: /platform/v1 IAM resources ------------------------------
ROLE = EntityType(
    type="sysdig_role",
    cls="AccessRole",
    resource="roles",
    key_source="id",
    key_type="integer",
    description="A custom team role, from /platform/v1/roles. Class AccessRole: a named set of permissions a "
                "team gives its members.",
    properties=(
        _p("id", "string", "Role id.", source="id", required=True),
        _p("name", "string", "Role name.", source="name", required=True),
        _p("displayName", "string", "Role name.", source="name", required=True),
        _p("description", "string", "Role description.", source="description"),
        _p("monitorPermissions", "string[]", "Permissions the role grants in Sysdig Monitor.",
           source="monitorPermissions"),
        _p("securePermissions", "string[]", "Permissions the role grants in Sysdig Secure.",
           source="securePermissions"),
    ),
)

SERVICE_ACCOUNT = EntityType(
    type="sysdig_service_account",
    cls="User",
    resource="service_accounts",
    shown=("teamId", "systemRoles", "neverExpires"),
    more_resources=("team_service_accounts",),
    key_source="id",
    key_type="integer",
    description="A Sysdig service account, global (/platform/v1/service-accounts) or a team's "
                "(/platform/v1/teams/{teamId}/service-accounts). Class User: a non-human identity that signs "
                "in with its own API token.",
    properties=(
        _p("id", "string", "Service account id.", source="id", required=True),
        _p("name", "string", "Service account name.", source="name", required=True),
        _p("displayName", "string", "Service account name.", source="name", required=True),
        _p("scope", "string", "global, or team (owned by one team).", derive="service_account_scope",
           required=True),
        _p("teamId", "integer", "The team it belongs to (team service accounts).", source="teamId"),
        _p("teamRole", "string", "Its role in that team.", source="teamRole"),
        _p("systemRoles", "string[]", "System roles (ROLE_CUSTOMER is customer administrator).",
           source="systemRoles"),
        _p("admin", "boolean", "Customer administrator (system role ROLE_CUSTOMER) or its team's manager "
                               "(ROLE_TEAM_MANAGER).", derive="service_account_admin", required=True),
        _p("neverExpires", "boolean", "Its token has no expiration date.", derive="never_expires", required=True),
        _p("expiresOn", "timestamp", "When its token expires.", source="expirationDate"),
        _p("lastUsedOn", "timestamp", "When its token was last used.", source="lastUsed"),
        _p("createdOn", "timestamp", "When it was created.", source="dateCreated"),
        _p("updatedOn", "timestamp", "When it was last updated.", source="lastUpdated"),
    ),
)

ACCESS_KEY = EntityType(
    type="sysdig_access_key",
    cls="AccessKey",
    resource="access_keys",
    shown=("teamId", "agentLimit", "enabled"),
    key_source="id",
    key_type="integer",
    description="An agent access key, from /platform/v1/access-keys: what a Sysdig agent presents to join the "
                "tenant. The key value itself is a secret and is never stored or published.",
    properties=(
        _p("id", "string", "Access key id (not the key).", source="id", required=True),
        _p("name", "string", "'Agent access key <id>'.", derive="access_key_name", required=True),
        _p("displayName", "string", "'Agent access key <id>'.", derive="access_key_name", required=True),
        _p("enabled", "boolean", "Agents may use the key.", source="isEnabled", required=True),
        _p("agentLimit", "integer", "Most agents that may use the key.", source="agentLimit"),
        _p("agentReservation", "integer", "Agents reserved for the key.", source="agentReservation"),
        _p("teamId", "integer", "The team whose key it is.", source="teamId"),
        _p("createdOn", "timestamp", "When the key was created.", source="dateCreated"),
        _p("disabledOn", "timestamp", "When the key was disabled.", source="dateDisabled"),
    ),
)

ZONE = EntityType(
    type="sysdig_zone",
    cls="Group",
    resource="zones",
    key_source="id",
    key_type="integer",
    description="A zone, from /platform/v1/zones: a named set of scope rules over clusters, accounts and hosts "
                "that limits what a team sees. Class Group: a group of resources.",
    properties=(
        _p("id", "string", "Zone id.", source="id", required=True),
        _p("name", "string", "Zone name.", source="name", required=True),
        _p("displayName", "string", "Zone name.", source="name", required=True),
        _p("description", "string", "Zone description.", source="description"),
        _p("system", "boolean", "Built in (e.g. Entire Infrastructure).", source="isSystem"),
        _p("author", "string", "Who created it.", source="author"),
        _p("lastModifiedBy", "string", "Who changed it last.", source="lastModifiedBy"),
        _p("scopeTargetTypes", "string[]", "What each scope selects (kubernetes, aws, gcp, azure, host, ...).",
           source="scopes[].targetType", api_required=True),
        _p("scopeRules", "string[]", "Each scope's rules, in the order of scopeTargetTypes.", source="scopes[].rules"),
        _p("updatedOn", "timestamp", "When it was last changed.", source="lastUpdated"),
    ),
)

SSO_SETTING = EntityType(
    type="sysdig_sso_setting",
    cls="Configuration",
    resource="sso_settings",
    key_source="id",
    key_type="integer",
    description="Single sign-on settings of a product, from /platform/v1/sso-settings. Its client secret is "
                "never stored or published.",
    properties=(
        _p("id", "string", "SSO settings id.", source="id", required=True),
        _p("name", "string", "Integration name, else 'SSO (<type>, <product>)'.", derive="sso_name", required=True),
        _p("displayName", "string", "Integration name, else 'SSO (<type>, <product>)'.", derive="sso_name",
           required=True),
        _p("product", "string", "Product it applies to (secure or monitor).", source="product"),
        _p("active", "boolean", "SSO is on.", source="isActive", required=True),
        _p("type", "string", "SAML or OPENID.", source="config.type", api_required=True),
        _p("passwordLoginEnabled", "boolean", "Users may still sign in with a password.",
           source="isPasswordLoginEnabled"),
        _p("createUserOnLogin", "boolean", "A first SSO login creates the user.", source="createUserOnLogin"),
        _p("singleLogoutEnabled", "boolean", "Single logout is on.", source="isSingleLogoutEnabled"),
        _p("groupMappingEnabled", "boolean", "Team roles follow identity-provider groups.",
           source="isGroupMappingEnabled"),
        _p("groupMappingAttributeName", "string", "The assertion attribute that names the groups.",
           source="groupMappingAttributeName"),
        _p("metadataUrl", "string", "Identity-provider metadata URL (SAML).", source="config.metadataUrl"),
        _p("issuerUrl", "string", "Identity-provider issuer URL (OpenID).", source="config.issuerUrl"),
        _p("createdOn", "timestamp", "When the settings were created.", source="dateCreated"),
        _p("updatedOn", "timestamp", "When the settings were last changed.", source="lastUpdated"),
    ),
)

IP_FILTER = EntityType(
    type="sysdig_ip_filter",
    cls="AccessPolicy",
    resource="ip_filters",
    key_source="id",
    key_type="integer",
    description="An entry of the account's IP allow-list, from /platform/v1/ip-filters. Class AccessPolicy: it "
                "decides from where the platform may be reached.",
    properties=(
        _p("id", "string", "IP filter id.", source="id", required=True),
        _p("name", "string", "The address range (CIDR).", source="ipRange", required=True),
        _p("displayName", "string", "The address range (CIDR).", source="ipRange", required=True),
        _p("ipRange", "string", "The address range (CIDR).", source="ipRange", required=True),
        _p("note", "string", "Why the range is listed.", source="note"),
        _p("enabled", "boolean", "The entry is in force.", source="isEnabled", required=True),
        _p("allowed", "boolean", "The range is allowed (rather than listed and denied).", source="isAllowed"),
        _p("updatedOn", "timestamp", "When it was last changed.", source="lastUpdated"),
    ),
)


# -- what Sysdig watches: the inventory (/secure/inventory/v1/resources) ---------------------------
def _inventory(kind: str) -> tuple[Property, ...]:
    """What clusters and hosts share: the inventory's own fields and vulnerability summary (the
    summary may be absent; when present, its counts are required)."""
    return (
        _p("id", "string", "Inventory hash of the resource.", source="hash", required=True, api_required=True),
        _p("name", "string", f"{kind} name.", source="name", required=True, api_required=True),
        _p("displayName", "string", f"{kind} name.", source="name", required=True),
        _p("platform", "string", "Kubernetes, AWS, GCP, Azure, ...", source="platform", api_required=True),
        _p("resourceType", "string", "Inventory type.", source="type", api_required=True),
        _p("category", "string", "Inventory category.", source="category", api_required=True),
        _p("exposed", "boolean", "Reachable from the internet.", source="isExposed"),
        _p("labels", "string[]", "Labels, as key=value.", source="labels"),
        _p("zoneNames", "string[]", "Zones it belongs to.", source="zones[].name", api_required=True),
        _p("lastSeenOn", "timestamp", "When Sysdig last saw it.", source="lastSeen", api_required=True),
        *(_p(f"{level}Vulnerabilities", "integer", f"{level.capitalize()} vulnerabilities.",
             source=f"vulnerabilitySummary.{level}SeverityCount", api_required=True) for level in SEVERITIES),
        _p("hasExploit", "boolean", "A vulnerability with a public exploit is present.",
           source="vulnerabilitySummary.hasExploit", api_required=True),
        *(_p(f"inUse{level.capitalize()}Vulnerabilities", "integer",
             f"{level.capitalize()} vulnerabilities in packages in use.",
             source=f"inUseVulnerabilitySummary.{level}SeverityCount", api_required=True)
          for level in ("critical", "high")),
    )


CLUSTER = EntityType(
    type="sysdig_cluster",
    cls="Cluster",
    resource="clusters",
    key_source="name",  # what hosts name their cluster by, and the Kubernetes integration keys it by
    description="A Kubernetes cluster Sysdig watches, from the inventory (type Cluster).",
    properties=(
        *_inventory("Cluster"),
        _p("distribution", "string", "Kubernetes distribution (EKS, AKS, GKE, OpenShift, vanilla, ...).",
           source="metadata.distribution"),
        _p("kubernetesVersion", "string", "Kubernetes version.", source="metadata.version"),
        _p("region", "string", "Cloud region (managed clusters).", source="metadata.region"),
        _p("arn", "string", "ARN of the EKS cluster.", source="metadata.arn"),
        _p("resourceId", "string", "Cloud resource id: the Azure resource id of an AKS cluster, the id of a GKE "
                                   "cluster.", source="metadata.resourceId"),
        _p("clusterId", "string", "GKE cluster id, where the inventory names it so (our reading).",
           source="metadata.clusterId"),
    ),
)

HOST = EntityType(
    type="sysdig_host",
    cls="Host",
    resource="hosts",
    key_source="hash",
    description="A host or Kubernetes node Sysdig watches, from the inventory (type Host or Node).",
    properties=(
        *_inventory("Host"),
        _p("hostname", "string", "Host name.", source="name", required=True),
        _p("cluster", "string", "Cluster the node belongs to.", source="metadata.cluster"),
        _p("nodeType", "string", "Kubernetes node role (e.g. Worker).", source="metadata.nodeType"),
        _p("os", "string", "Operating system.", source="metadata.os"),
        _p("kernelVersion", "string", "Kernel version.", source="metadata.kernelVersion"),
        _p("agentVersion", "string", "Version of the Sysdig agent on it.", source="metadata.agentVersion"),
        _p("arn", "string", "ARN of the EC2 instance it is.", source="metadata.arn"),
        _p("resourceId", "string", "Cloud resource id of the machine (an Azure VM's resource id, a Compute Engine "
                                   "instance's resource name).", source="metadata.resourceId"),
        _p("providerId", "string", "Cloud instance a Kubernetes node runs on, as Kubernetes names it "
                                   "(aws:///<zone>/<instance id>, azure:///<resource id>, gce://<project>/<zone>/<name>).",
           source="metadata.providerID"),
        _p("instanceId", "string", "EC2 instance id, from arn or providerId.", derive="aws_instance_id"),
    ),
)

# Other integrations' entities our hosts and clusters are: matched, never created (they own them).
AWS_INSTANCE = MappedTarget("aws_instance", "Host", r"^i-[0-9a-f]{8,17}$", "An EC2 instance (AWS integration).",
                            match="instanceId", skip_creation=True)
AZURE_VM = MappedTarget("azure_vm", "Host", r"^/subscriptions/[^/]+/resourcegroups/[^/]+/providers/"
                        r"microsoft\.compute/virtualmachines/[^/]+$",
                        "An Azure virtual machine (Azure integration), by lower-cased resource id.", skip_creation=True)
GCE_INSTANCE = MappedTarget("google_compute_instance", "Host",
                            r"^https://www\.googleapis\.com/compute/v1/projects/[^/]+/zones/[^/]+/instances/[^/]+$",
                            "A Compute Engine instance (Google Cloud integration), by self link.", skip_creation=True)
KUBE_CLUSTER = MappedTarget("kube_cluster", "Cluster", r"^kube_cluster:.+$",
                            "A cluster of the Kubernetes integration, keyed by name.", skip_creation=True)
EKS_CLUSTER = MappedTarget("aws_eks_cluster", "Cluster", r"^arn:aws[a-z-]*:eks:[^:]+:\d{12}:cluster/.+$",
                           "An EKS cluster (AWS integration), by ARN.", match="arn", skip_creation=True)
AKS_CLUSTER = MappedTarget("azure_kubernetes_cluster", "Cluster", r"^/subscriptions/[^/]+/resourcegroups/[^/]+/"
                           r"providers/microsoft\.containerservice/managedclusters/[^/]+$",
                           "An AKS cluster (Azure integration), by lower-cased resource id.", skip_creation=True)
GKE_CLUSTER = MappedTarget("google_container_cluster", "Cluster", r"^google_container_cluster:.+$",
                           "A GKE cluster (Google Cloud integration), by cluster id.", skip_creation=True)

ENTITIES: tuple[EntityType, ...] = (
    ACCOUNT, USER, TEAM, IMAGE_SCAN, FINDING, ROLE, SERVICE_ACCOUNT, ACCESS_KEY, ZONE, SSO_SETTING, IP_FILTER,
    CLUSTER, HOST,
)

RELATIONSHIPS: tuple[RelationshipType, ...] = (
    RelationshipType(ACCOUNT, USER, "The account has the user."),
    RelationshipType(ACCOUNT, TEAM, "The account has the team."),
    RelationshipType(ACCOUNT, IMAGE_SCAN, "The account has the image scan result."),
    RelationshipType(
        TEAM,
        USER,
        "The team has the user as a member, with the member's team role.",
        resource="team_memberships",
        source_key_field="teamId",
        target_key_field="userId",
        properties=(
            _p("role", "string", "Standard team role, or CUSTOM:<id> for a custom role.", derive="membership_role",
               required=True),
            _p("customTeamRoleId", "integer", "Custom team role id, when the member has one.",
               source="customTeamRoleId"),
        ),
    ),
    RelationshipType(IMAGE_SCAN, FINDING, "The image scan result identified the finding.", cls="IDENTIFIED",
                     resource="findings", source_key_field="resultId", target_key_field="findingId"),
    RelationshipType(FINDING, CVE, "The finding is an instance of the CVE (mapped: JupiterOne resolves the CVE "
                                   "entity, or creates it once). Findings without a CVE id have none.",
                     cls="IS", resource="findings", source_key_field="findingId",
                     target_key_field="vulnerability.name", target_key_rule="cve_key"),
    *(RelationshipType(ACCOUNT, owned, f"The account has the {owned.type.removeprefix('sysdig_').replace('_', ' ')}.")
      for owned in (ROLE, SERVICE_ACCOUNT, ACCESS_KEY, ZONE, SSO_SETTING, IP_FILTER, CLUSTER, HOST)),
    RelationshipType(TEAM, ROLE, "The team gives its members this custom role by default.", cls="ASSIGNED",
                     resource="teams", source_key_field="id", target_key_field="customTeamRoleId", optional=True),
    RelationshipType(TEAM, SERVICE_ACCOUNT, "The team owns the service account.", resource="team_service_accounts",
                     source_key_field="teamId", target_key_field="id", optional=True),
    RelationshipType(TEAM, ACCESS_KEY, "The team owns the agent access key.", resource="access_keys",
                     source_key_field="teamId", target_key_field="id", optional=True),
    RelationshipType(TEAM, ZONE, "The team sees what the zone scopes (teams with allZones see everything).",
                     cls="USES", resource="teams", source_key_field="id", target_key_field="zoneIds", many=True),
    RelationshipType(CLUSTER, HOST, "The host is a node of the cluster.", resource="hosts",
                     source_key_field="metadata.cluster", target_key_field="hash", optional=True),
    RelationshipType(HOST, AWS_INSTANCE, "The host is this EC2 instance (mapped: matched by instance id, from its arn or "
                                         "a node's providerID, in the AWS integration's data, never created).",
                     cls="IS", resource="hosts",
                     source_key_field="hash", target_key_field="metadata.providerID",
                     target_key_rule="aws_instance_id"),
    RelationshipType(HOST, AZURE_VM, "The host is this Azure VM (mapped: matched by resource id, from resourceId or a "
                                     "node's providerID, never created).",
                     cls="IS", resource="hosts", source_key_field="hash", target_key_field="metadata.providerID",
                     target_key_rule="azure_vm_id"),
    RelationshipType(HOST, GCE_INSTANCE, "The host is this Compute Engine instance (mapped: matched by self link, "
                                         "from resourceId or a node's providerID, never created).", cls="IS",
                     resource="hosts", source_key_field="hash",
                     target_key_field="metadata.providerID", target_key_rule="gce_instance_link"),
    RelationshipType(CLUSTER, KUBE_CLUSTER, "The cluster is the Kubernetes integration's cluster of the same name "
                                            "(mapped, never created).", cls="IS", resource="clusters",
                     source_key_field="name", target_key_field="name", target_key_rule="kube_cluster_key"),
    RelationshipType(CLUSTER, EKS_CLUSTER, "The cluster is this EKS cluster (mapped: matched by ARN, never created).",
                     cls="IS", resource="clusters", source_key_field="name", target_key_field="metadata.arn"),
    RelationshipType(CLUSTER, AKS_CLUSTER, "The cluster is this AKS cluster (mapped: matched by resource id, never "
                                           "created).", cls="IS", resource="clusters", source_key_field="name",
                     target_key_field="metadata.resourceId", target_key_rule="azure_resource_key"),
    RelationshipType(CLUSTER, GKE_CLUSTER, "The cluster is this GKE cluster (mapped: matched by cluster id, its "
                                           "resourceId when its distribution is GKE, else clusterId; never created).",
                     cls="IS", resource="clusters", source_key_field="name",
                     target_key_field="metadata.clusterId", target_key_rule="gke_cluster_key"),
)



@dataclass(frozen=True)
class Unpublished:
    """Something this project reads that Sysdig's published response models (those of its
    OpenAPI-generated client, see the README) do not have: our reading of the real API, with why.
    Read when present, never relied on being there unless the model says so."""

    model: str  # the published model it extends, or the path of the endpoint it belongs to
    field: str  # dotted, from that model; "*" any field; "?name" a query parameter
    reason: str


UNPUBLISHED: tuple[Unpublished, ...] = (
    Unpublished("UserResponseV1", "isEnabled", "whether the user may sign in: the service sends it, the published "
                "model lags it"),
    Unpublished("/platform/v1/teams/{id}/users", "?withAdminUsers", "lists customer admins as members of every "
                "team, as the UI does; not in the published client"),
    Unpublished("SsoSettingsResponseV1", "integrationName", "the name an admin gave the integration"),
    Unpublished("SsoSettingsResponseBaseV1", "*", "the published models hold only the base of `config` (its "
                "`type`); its SAML and OpenID variants carry metadataUrl, issuerUrl, clientId, clientSecret, ..."),
    Unpublished("InventoryResource", "metadata.*", "metadata is published only as an object; its keys (cluster, "
                "providerID, arn, resourceId, clusterId, ...) are our reading of inventory answers"),
    Unpublished("Package", "riskAcceptRefs", "package-level risk acceptance: in other public Sysdig material (the "
                "Jenkins plugin's scan-result model assigns accepted risks to packages), not in this client"),
    Unpublished("Vulnerability", "providersMetadata.*", "published only as a map: FIRST.org's EPSS score under "
                "`first.org`.`epssScore` is our reading"),
    Unpublished("/api/scanning/v1/resultsDirect", "fullTag", "legacy scanning (end of life 2024-12-31), which no "
                "published model covers"),
    Unpublished("/api/scanning/v1/resultsDirect", "policyStatus", "legacy scanning (end of life 2024-12-31), which "
                "no published model covers"),
)

# Resources the extract tasks fetch; every entity and relationship resource appears here.
RESOURCES: tuple[str, ...] = ("account", "users", "teams", "team_memberships", "roles", "service_accounts",
                              "team_service_accounts", "access_keys", "zones", "sso_settings", "ip_filters", "clusters", "hosts",
                              "image_scans", "findings")
# What cannot be switched off (connection extra disabled_resources): every other type hangs off it.
CANNOT_SWITCH_OFF: tuple[str, ...] = ("account",)
MAPPED_TARGETS: tuple[MappedTarget, ...] = tuple(dict.fromkeys(r.target for r in RELATIONSHIPS if r.mapped))
# Properties holding another entity's id (`<type>:<id>` is its key): what the change report names
# them, and the type. `EntityType.shown` may list them.
REFERS_TO: dict[str, tuple[str, EntityType]] = {"teamId": ("team", TEAM), "imageScanId": ("image", IMAGE_SCAN)}


def partial_types(missing_resources: set[str]) -> tuple[set[str], set[str]]:
    """Entity and relationship types left incomplete when these resources could not be extracted:
    the resource's own types and types with a property derived from it, plus every relationship
    type touching an incomplete entity type."""
    entities = {
        e.type for e in ENTITIES
        if set(e.resources) & missing_resources
        or any(set(p.from_resources) & missing_resources for p in e.properties)
    }
    return entities, _relationship_types(missing_resources, entities)


def reread_with(changed: set[str]) -> set[str]:
    """The resources a quick sync re-reads when these changed, so that every type it publishes is
    built from complete listings: those behind every entity type the changed ones feed, and behind
    every entity type linked to those (a user's teams, a team's roles, zones, keys, ...), until
    nothing more is linked; the account's own links do not count (it owns every type), and the
    account is always read (the relationships from it need its key)."""
    types = {e for e in ENTITIES if set(e.resources) & changed
             or any(set(p.from_resources) & changed for p in e.properties)}
    while True:
        linked = {end for r in RELATIONSHIPS if not r.mapped and ACCOUNT not in (r.source, r.target)
                  and (r.source in types or r.target in types) for end in (r.source, r.target)}
        if linked <= types:
            break
        types |= linked
    needed = {ACCOUNT.resource}
    for entity in types:
        needed |= {*entity.resources, *(r for p in entity.properties for r in p.from_resources)}
    needed |= {r.resource for r in RELATIONSHIPS if r.resource and r.source in types and r.target in types}
    return needed


def switched_off_types(resources: set[str]) -> tuple[set[str], set[str]]:
    """Entity and relationship types an operator removes by switching these resources off: their
    own types (those fed by several resources once all are off) and every relationship type
    touching them. (A property derived from a switched-off resource is left empty instead: the
    team's member count.)"""
    entities = {e.type for e in ENTITIES if set(e.resources) <= resources}
    return entities, _relationship_types(resources, entities)


def _relationship_types(resources: set[str], entity_types: set[str]) -> set[str]:
    return {r.type for r in RELATIONSHIPS
            if r.resource in resources or r.source.type in entity_types or r.target.type in entity_types}
