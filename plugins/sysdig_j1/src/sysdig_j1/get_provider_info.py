"""Provider metadata: registers the `sysdig` and `jupiterone` connection types with Airflow.

Airflow 3.3's UI builds connection forms from the declarative `conn-fields` and
`ui-field-behaviour` keys below (the old `get_connection_form_widgets` hook methods are no longer
read), so this is the single place where the connection contract is described to users.
"""

from __future__ import annotations

from sysdig_j1.model import (
    CANNOT_SWITCH_OFF,
    DEFAULT_FINDING_MIN_SEVERITY,
    DEFAULT_FINDING_STAGES,
    RESOURCES,
    SEVERITIES,
    VM_STAGES,
)
from sysdig_j1.regions import JUPITERONE_REGIONS, SYSDIG_REGIONS


def get_provider_info() -> dict:
    return {
        "package-name": "airflow-provider-sysdig-j1",
        "name": "Sysdig to JupiterOne",
        "description": "Hooks and connection types for syncing Sysdig Secure into JupiterOne.",
        "versions": ["0.1.0"],
        "connection-types": [
            {
                "connection-type": "sysdig",
                "hook-class-name": "sysdig_j1.hooks.sysdig.SysdigHook",
                "hook-name": "Sysdig Secure",
                "conn-fields": {
                    "region": {
                        "label": "Region",
                        "description": "Sysdig SaaS region; ignored when API URL is set.",
                        "schema": {"type": ["string", "null"], "default": "us1", "enum": [*SYSDIG_REGIONS, None]},
                    },
                    "account_name": {
                        "label": "Account name",
                        "description": "Stored on every entity as tag.AccountName.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "image_scan_source": {
                        "label": "Image scan source",
                        "description": "vulnerability-management (current) or legacy-scanning (resultsDirect, EOL).",
                        "schema": {
                            "type": ["string", "null"],
                            "default": "vulnerability-management",
                            "enum": ["vulnerability-management", "legacy-scanning", None],
                        },
                    },
                    "finding_stages": {
                        "label": "Findings from stages",
                        "description": f"Comma-separated, of {', '.join(VM_STAGES)}; empty for no findings. "
                                       "Default: what is running.",
                        "schema": {"type": ["string", "null"], "default": ",".join(DEFAULT_FINDING_STAGES)},
                    },
                    "finding_min_severity": {
                        "label": "Lowest finding severity",
                        "description": "Findings below it are not published. Default: all but negligible.",
                        "schema": {"type": ["string", "null"], "default": DEFAULT_FINDING_MIN_SEVERITY,
                                   "enum": [*SEVERITIES, None]},
                    },
                    "disabled_resources": {
                        "label": "Resources switched off",
                        "description": "Comma-separated, of "
                                       + ", ".join(r for r in RESOURCES if r not in CANNOT_SWITCH_OFF)
                                       + ". Their types are removed from JupiterOne on the next publish.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "max_concurrency": {
                        "label": "Max concurrent requests",
                        "schema": {"type": ["integer", "null"], "default": 8, "minimum": 1},
                    },
                    "quick_sync": {
                        "label": "Quick sync",
                        "description": "Changes in the platform audit trail start a quick sync within a minute "
                                       "(needs audit-trail-events.read). Off: only the scheduled full sync.",
                        "schema": {"type": ["boolean", "null"], "default": True},
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "login", "extra"],
                    "relabeling": {"password": "API Token", "host": "API URL (optional override)"},
                    "placeholders": {"host": "https://us2.app.sysdig.com"},
                },
            },
            {
                "connection-type": "jupiterone",
                "hook-class-name": "sysdig_j1.hooks.jupiterone.JupiterOneHook",
                "hook-name": "JupiterOne",
                "conn-fields": {
                    "region": {
                        "label": "Region",
                        "schema": {"type": ["string", "null"], "default": "us", "enum": [*JUPITERONE_REGIONS, None]},
                    },
                    "integration_instance_id": {
                        "label": "Integration instance ID",
                        "description": "Optional; jobs then use source integration-external instead of api.",
                        "schema": {"type": ["string", "null"]},
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "extra"],
                    "relabeling": {
                        "login": "Account ID",
                        "password": "API Key",
                        "host": "API URL (optional override)",
                    },
                    "placeholders": {"host": "https://api.us.jupiterone.io"},
                },
            },
        ],
    }
