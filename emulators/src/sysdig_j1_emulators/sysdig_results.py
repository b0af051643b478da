"""Full vulnerability scan results for the Sysdig emulator (`GET /secure/vulnerability/v1/results/{id}`).

A fixed catalogue of package templates, derived from the seed, each with up to four
vulnerabilities drawn from one shared pool of advisories: so images share CVEs, as a real fleet
does, and a few advisories have no CVE id (GHSA-...). An image picks a number of templates that
varies widely (tens to hundreds of vulnerabilities); some vulnerabilities and packages are covered
by risk acceptances (active or expired), packages sit in layers, the first two from a base image.

Answers are large, so each template's package and vulnerability entries are encoded to JSON once
and a result is assembled from those fragments; the listing's `vulnTotalBySeverity` and
`runningVulnTotalBySeverity` are computed from the same picks, so the two always agree.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from functools import cached_property

SEVERITIES = ("critical", "high", "medium", "low", "negligible")
_SEVERITY_WEIGHTS = (5, 20, 40, 28, 7)
_CVSS = {"critical": 9.4, "high": 7.5, "medium": 5.3, "low": 3.1, "negligible": 0.0}
CATALOGUE = 600  # package templates
POOL = 2_000  # advisories
_OS_PACKAGES = ("openssl", "libc6", "zlib1g", "libxml2", "curl", "bash", "tar", "perl-base", "libssl3", "ncurses")
_LANGUAGE_PACKAGES = {"java": ("log4j-core", "jackson-databind", "spring-web", "netty-codec"),
                      "python": ("requests", "urllib3", "pyyaml", "jinja2"),
                      "javascript": ("lodash", "minimist", "express", "axios"),
                      "golang": ("golang.org/x/net", "golang.org/x/crypto", "github.com/gin-gonic/gin")}
_PATHS = {"java": "/app/lib/{name}-{version}.jar", "python": "/usr/lib/python3/site-packages/{name}",
          "javascript": "/app/node_modules/{name}/package.json", "golang": "/app/server"}
BASE_IMAGE = "docker.io/library/debian:12-slim"


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def advisory_name(c: int) -> str:
    """Advisory c of the pool: a CVE id, except every 25th, which is a GitHub advisory only."""
    if c % 25 == 24:
        digest = hashlib.sha256(f"ghsa:{c}".encode()).hexdigest()
        return f"GHSA-{digest[:4]}-{digest[4:8]}-{digest[8:12]}"
    return f"CVE-{2016 + c % 9}-{10000 + c}"


@dataclass(frozen=True)
class _Template:
    ref: str
    running: str  # the package entry when a process uses it, as JSON "ref":{...}
    idle: str  # the same package, not in use
    vulnerabilities: tuple[tuple[str, str], ...]  # (severity, JSON "ref":{...})
    accepts: tuple[str, ...]  # JSON "ref":{...} of the risk acceptances it or its vulnerabilities name


class ResultCatalogue:
    def __init__(self, seed: int, packages_per_scan: int) -> None:
        self.seed = seed
        self.packages_per_scan = packages_per_scan

    @cached_property
    def templates(self) -> list[_Template]:
        return [self._template(t) for t in range(CATALOGUE)]

    def _template(self, t: int) -> _Template:
        rng = random.Random(f"{self.seed}:package:{t}")
        kind = "os" if t % 2 == 0 else ("java", "python", "javascript", "golang")[t // 2 % 4]
        names = _OS_PACKAGES if kind == "os" else _LANGUAGE_PACKAGES[kind]
        name, version = names[t % len(names)], f"{1 + t % 4}.{t // 4 % 10}.{t % 7}"
        accepts: dict[str, dict] = {}
        vulnerability_refs, vulnerabilities = [], []
        advisories = rng.sample(range(POOL), 0 if t % 4 == 3 else rng.randint(1, 4))  # a quarter are clean
        for m, c in enumerate(advisories):
            severity = rng.choices(SEVERITIES, _SEVERITY_WEIGHTS)[0]
            ref, fixed = f"v{t}-{m}", rng.random() < 0.6
            year = 2016 + c % 9
            entry = {
                "name": advisory_name(c), "severity": severity,
                "cvssScore": {"version": "3.1", "score": _CVSS[severity],
                              "vector": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"},
                "disclosureDate": f"{year}-0{1 + c % 9}-1{c % 10}",
                "solutionDate": f"{year}-0{1 + c % 9}-2{c % 9}" if fixed else None,
                "exploitable": c % 10 == 0,
                "fixVersion": f"{1 + t % 4}.{t // 4 % 10}.{t % 7 + 1}" if fixed else None,
                "mainProvider": "vulndb" if kind == "os" else "github",
                "packageRef": f"p{t}",
                "riskAcceptRefs": [],
                "providersMetadata": {"first.org": {"epssScore": {"score": round(rng.random() / 10, 5),
                                                                  "percentile": round(rng.random(), 5),
                                                                  "timestamp": "2025-11-01T00:00:00Z"}},
                                      "nvd": {"publicationDate": f"{year}-01-01T00:00:00Z"}},
            }
            if c % 10 == 0:
                entry["exploit"] = {"publicationDate": f"{year}-06-01T00:00:00Z",
                                    "links": [f"https://www.exploit-db.com/exploits/{40000 + c}"]}
            if c % 40 == 0:
                entry["cisaKev"] = {"publishDate": {"type": "cisaKevDueDateIn", "extra": {"days": 21}}}
            if (t * 7 + m) % 19 == 0:  # accepted in every image; every other one has expired
                accept = f"ra{t}-{m}"
                entry["riskAcceptRefs"] = [accept]
                accepts[accept] = self._acceptance(accept, advisory_name(c), [{"type": "imageName", "value": "*"}],
                                                   active=(t + m) % 2 == 0)
            vulnerability_refs.append(ref)
            vulnerabilities.append((severity, f'"{ref}":{_dumps(entry)}'))
        package = {
            "type": kind, "name": name, "version": version, "license": ("MIT", "Apache-2.0", "GPL-2.0")[t % 3],
            "path": _PATHS[kind].format(name=name, version=version) if kind != "os" else None,
            "suggestedFix": f"{1 + t % 4}.{t // 4 % 10 + 1}.0" if vulnerability_refs else None,
            "isRemoved": False, "layerRef": f"l{t % 2}" if kind == "os" else f"l{2 + t % 3}",
            "vulnerabilitiesRefs": vulnerability_refs, "riskAcceptRefs": [],
        }
        if t % 53 == 0 and vulnerability_refs:  # accepted for this package version (see `_acceptance`)
            accept = f"rp{t}"
            package["riskAcceptRefs"] = [accept]
            scope = [{"type": "packageName", "value": name}, {"type": "packageVersion", "value": version}]
            accepts[accept] = self._acceptance(accept, advisory_name(advisories[0]), scope, active=True)
        return _Template(
            ref=f"p{t}",
            running=f'"p{t}":{_dumps({**package, "isRunning": True})}',
            idle=f'"p{t}":{_dumps({**package, "isRunning": False})}',
            vulnerabilities=tuple(vulnerabilities),
            accepts=tuple(f'"{ref}":{_dumps(value)}' for ref, value in accepts.items()),
        )

    @staticmethod
    def _acceptance(ref: str, vulnerability: str, context: list[dict], active: bool) -> dict:
        """A vulnerability's risk acceptance, in the scope `context` gives. One scoped to a package
        version is also listed by that package (`riskAcceptRefs` on a package: not in the published
        models, our reading of public Sysdig material) and covers all its vulnerabilities."""
        return {"id": f"accept-{ref}", "entityType": "vulnerability", "entityValue": vulnerability,
                "context": context, "status": "active" if active else "expired",
                "reason": "RiskMitigated" if active else "RiskOwned",
                "description": f"Compensating control for {vulnerability}",
                "expirationDate": "2027-06-30" if active else "2025-01-31",
                "createdAt": "2024-12-01T10:00:00Z", "updatedAt": "2024-12-01T10:00:00Z"}

    def picks(self, k: int) -> list[tuple[_Template, bool]]:
        """The packages of image k and whether each is in use: 1/4 to 2x the mean, every tenth
        image four times as large (the odd fat image)."""
        rng = random.Random(f"{self.seed}:result:{k}")
        count = rng.randint(max(1, self.packages_per_scan // 4), self.packages_per_scan * 2) * (4 if k % 10 == 5 else 1)
        chosen = rng.sample(range(CATALOGUE), min(count, CATALOGUE))
        return [(self.templates[t], rng.random() < 0.4) for t in sorted(chosen)]

    def counts(self, k: int) -> tuple[dict[str, int], dict[str, int]]:
        """vulnTotalBySeverity and runningVulnTotalBySeverity of image k."""
        totals, running = dict.fromkeys(SEVERITIES, 0), dict.fromkeys(SEVERITIES, 0)
        for template, in_use in self.picks(k):
            for severity, _ in template.vulnerabilities:
                totals[severity] += 1
                running[severity] += in_use
        return totals, running

    def body(self, k: int, stage: str, metadata: dict, policy: str | None) -> bytes:
        picks = self.picks(k)
        digest = hashlib.sha256(f"{self.seed}:layers:{k}".encode()).hexdigest()
        layers = {f"l{n}": {"index": n, "digest": f"sha256:{digest[n:n + 56]}{n:08d}", "size": 1_000_000 * (n + 1),
                            "command": "RUN apt-get install" if n < 2 else f"COPY app/ /app/{n}",
                            "baseImagesRef": ["b0"] if n < 2 else []} for n in range(5)}
        evaluations = [] if policy in (None, "noPolicy") else [{
            "name": "Sysdig Best Practices", "identifier": "sysdig-best-practices", "description": "",
            "bundles": [{"name": "Severities", "identifier": "severities", "type": "predefined", "rules": [
                {"ruleId": "1", "ruleType": "vulnSeverityAndThreats", "evaluationResult": policy,
                 "failureType": "pkgVulnFailure", "description": "Severity greater than or equal to high",
                 "failures": []}]}],
            "evaluation": policy, "createdAt": "2025-11-01T00:00:00Z", "updatedAt": "2025-11-01T00:00:00Z"}]
        parts = [
            '{"assetType":"containerImage","stage":', _dumps(stage), ',"metadata":', _dumps(metadata),
            ',"producer":{"producedAt":"2025-11-01T00:00:00Z"},"packages":{',
            ",".join(template.running if in_use else template.idle for template, in_use in picks),
            '},"vulnerabilities":{',
            ",".join(entry for template, _ in picks for _, entry in template.vulnerabilities),
            '},"riskAccepts":{', ",".join(accept for template, _ in picks for accept in template.accepts),
            '},"layers":', _dumps(layers), ',"baseImages":', _dumps({"b0": {"pullStrings": [BASE_IMAGE]}}),
            ',"policies":', _dumps({"globalEvaluation": policy or "noPolicy", "evaluations": evaluations}), "}",
        ]
        return "".join(parts).encode()
