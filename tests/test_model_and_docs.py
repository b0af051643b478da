"""The data model is the single source: schemas and README are generated from it and must not drift."""

from __future__ import annotations

import json
import subprocess

from conftest import REPO

from sysdig_j1.extract import EXTRACTS
from sysdig_j1.model import ENTITIES, RELATIONSHIPS, RESOURCES
from sysdig_j1.quality import build_checks
from sysdig_j1.schemas import README_BEGIN, README_END, all_schemas, render_markdown


def test_include_schemas_match_the_model():
    on_disk = {p.stem: json.loads(p.read_text()) for p in (REPO / "include" / "schemas").glob("*.json")}
    assert on_disk == all_schemas(), "include/schemas is stale: run `make schemas`"


def test_readme_data_model_section_matches_the_model():
    readme = (REPO / "README.md").read_text()
    section = readme.split(README_BEGIN, 1)[1].split(README_END, 1)[0].strip()
    assert section == render_markdown(), "README data-model section is stale: run `make schemas`"


def test_types_classes_and_relationship_names_are_the_contract():
    """JupiterOne queries depend on these names: the first ones never change, new ones are added."""
    assert [(e.type, e.cls) for e in ENTITIES] == [
        ("sysdig_account", "Account"), ("sysdig_user", "User"), ("sysdig_team", "Team"),
        ("sysdig_image_scan", "Assessment"), ("sysdig_finding", "Finding"),
        ("sysdig_role", "AccessRole"), ("sysdig_service_account", "User"), ("sysdig_access_key", "AccessKey"),
        ("sysdig_zone", "Group"), ("sysdig_sso_setting", "Configuration"), ("sysdig_ip_filter", "AccessPolicy"),
        ("sysdig_cluster", "Cluster"), ("sysdig_host", "Host"),
    ]
    owned = ("role", "service_account", "access_key", "zone", "sso_setting", "ip_filter", "cluster", "host")
    assert [(r.source.type, r.type, r.target.type, r.cls) for r in RELATIONSHIPS] == [
        ("sysdig_account", "sysdig_account_has_user", "sysdig_user", "HAS"),
        ("sysdig_account", "sysdig_account_has_team", "sysdig_team", "HAS"),
        ("sysdig_account", "sysdig_account_has_image_scan", "sysdig_image_scan", "HAS"),
        ("sysdig_team", "sysdig_team_has_user", "sysdig_user", "HAS"),
        ("sysdig_image_scan", "sysdig_image_scan_identified_finding", "sysdig_finding", "IDENTIFIED"),
        ("sysdig_finding", "sysdig_finding_is_cve", "cve", "IS"),
        *(("sysdig_account", f"sysdig_account_has_{name}", f"sysdig_{name}", "HAS") for name in owned),
        ("sysdig_team", "sysdig_team_assigned_role", "sysdig_role", "ASSIGNED"),
        ("sysdig_team", "sysdig_team_has_service_account", "sysdig_service_account", "HAS"),
        ("sysdig_team", "sysdig_team_has_access_key", "sysdig_access_key", "HAS"),
        ("sysdig_team", "sysdig_team_uses_zone", "sysdig_zone", "USES"),
        ("sysdig_cluster", "sysdig_cluster_has_host", "sysdig_host", "HAS"),
        ("sysdig_host", "sysdig_host_is_aws_instance", "aws_instance", "IS"),
        ("sysdig_host", "sysdig_host_is_azure_vm", "azure_vm", "IS"),
        ("sysdig_host", "sysdig_host_is_google_compute_instance", "google_compute_instance", "IS"),
        ("sysdig_cluster", "sysdig_cluster_is_kube_cluster", "kube_cluster", "IS"),
        ("sysdig_cluster", "sysdig_cluster_is_aws_eks_cluster", "aws_eks_cluster", "IS"),
        ("sysdig_cluster", "sysdig_cluster_is_azure_kubernetes_cluster", "azure_kubernetes_cluster", "IS"),
        ("sysdig_cluster", "sysdig_cluster_is_google_container_cluster", "google_container_cluster", "IS"),
    ]
    # Another integration's assets are matched, never created by this one.
    assert all(r.target.skip_creation for r in RELATIONSHIPS if r.mapped and r.target.type != "cve")
    for entity in ENTITIES:  # JupiterOne's Entity schema needs both on every entity
        assert {"name", "displayName"} <= set(entity.required)


def test_every_resource_has_an_extract_task_and_feeds_the_model():
    assert set(EXTRACTS) == set(RESOURCES)
    for declared in EXTRACTS.values():  # an extract runs after one declared before it
        assert declared.after is None or list(EXTRACTS).index(declared.after) < list(EXTRACTS).index(declared.resource)
    fed = {e.resource for e in ENTITIES} | {r.resource for r in RELATIONSHIPS if r.resource}
    assert fed == set(RESOURCES)


def test_a_property_name_has_one_type_across_types():
    """Every entity type shares one frame (and relationship types another): a name is one column."""
    for owners in (ENTITIES, RELATIONSHIPS):
        types: dict[str, set[str]] = {}
        for owner in owners:
            for prop in owner.properties:
                types.setdefault(prop.name, set()).add(prop.type)
        assert {name: found for name, found in types.items() if len(found) > 1} == {}


def test_quality_checks_cover_every_required_property():
    checks = build_checks()
    not_null = {(c.type, dict(c.kwargs)["column"]) for c in checks if c.expectation == "ExpectColumnValuesToNotBeNull"}
    for owner in (*ENTITIES, *RELATIONSHIPS):
        assert {(owner.type, name) for name in owner.required} <= not_null
    # (expectation, column) identifies a check within its slice; quality.validate relies on that.
    slices = [(c.frame, c.type, c.expectation, dict(c.kwargs)["column"]) for c in checks]
    assert len(slices) == len(set(slices))


def test_docker_compose_is_valid_and_consistent():
    import yaml

    result = subprocess.run(
        [str(REPO / ".venv" / "bin" / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec",
         str(REPO / "docker-compose.yaml")],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
            "airflow-triggerer", "airflow-worker"} <= set(services)
    for name, service in services.items():  # what the schema cannot check: references resolve
        assert set(service.get("depends_on", {})) <= set(services), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith(".") or source in compose["volumes"], (name, volume)
            if source.startswith("./"):
                assert (REPO / source).exists(), (name, volume)
    env = services["airflow-worker"]["environment"]
    assert {"AIRFLOW_CONN_SYSDIG_DEFAULT", "AIRFLOW_CONN_JUPITERONE_DEFAULT"} <= set(env)
    assert (REPO / services["airflow-scheduler"]["build"]["dockerfile"]).exists()
