"""Region -> base URL tables for Sysdig SaaS and JupiterOne.

Sysdig host names are irregular (us1 is secure.sysdig.com; us2/eu1 are <r>.app.sysdig.com; the
rest are app.<r>.sysdig.com), so an explicit table is the only safe rule.
"""

from __future__ import annotations

from urllib.parse import urlsplit

SYSDIG_REGIONS: dict[str, str] = {
    "us1": "https://secure.sysdig.com",
    "us2": "https://us2.app.sysdig.com",
    "us3": "https://app.us3.sysdig.com",
    "us4": "https://app.us4.sysdig.com",
    "eu1": "https://eu1.app.sysdig.com",
    "eu2": "https://app.eu2.sysdig.com",
    "au1": "https://app.au1.sysdig.com",
    "in1": "https://app.in1.sysdig.com",
    "jp1": "https://app.jp1.sysdig.com",
    "me2": "https://app.me2.sysdig.com",
}

JUPITERONE_REGIONS: dict[str, str] = {
    "us": "https://api.us.jupiterone.io",
    "eu": "https://api.eu.jupiterone.io",
}
# JupiterOne's GraphQL API (questions, rules) lives on a host of its own per region; with a host
# override (an emulator, a proxy) it is that host's /graphql.
JUPITERONE_GRAPHQL: dict[str, str] = {
    "us": "https://graphql.us.jupiterone.io",
    "eu": "https://graphql.eu.jupiterone.io",
}


def base_url(table: dict[str, str], region: str | None, host: str | None, service: str) -> str:
    """The explicit host override wins, but a region that is set must be a known one either way."""
    if region is not None and region not in table:
        known = ", ".join(table)
        raise ValueError(f"unknown {service} region {region!r}; expected one of: {known}")
    if host:
        url = host.rstrip("/") if "://" in host else f"https://{host.rstrip('/')}"
        if urlsplit(url).username is not None:  # it would end up in logs, XCom and every webLink
            raise ValueError(f"the {service} host must not carry credentials; put the key in the password field")
        return url
    if region is None:
        raise ValueError(f"no {service} region and no host set")
    return table[region]
