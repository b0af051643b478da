"""The source contract derived from the model, and the scrubber that keeps secrets out of storage."""

from __future__ import annotations

import pytest

from sysdig_j1.contract import ContractError, contract_for, contracts, epoch_ms
from sysdig_j1.model import ENTITIES, RELATIONSHIPS
from sysdig_j1.scrub import MAX_DEPTH, NestedTooDeep, Scrubber, is_secret


# -- the contract ---------------------------------------------------------------------------------
def test_every_source_field_of_the_model_is_in_a_contract_with_its_type():
    for entity in ENTITIES:
        for prop in entity.properties:
            for name in prop.sources:
                if name.startswith("_"):
                    continue
                resource, field = entity.resource, name
                if entity.enrichment and name.startswith(entity.enrichment[2]):
                    resource, field = entity.enrichment[0], name.removeprefix(entity.enrichment[2])
                expected = entity.key_type if name in entity.key_sources else prop.type
                assert contract_for(resource).fields[field] == expected, (entity.type, name)
    for rel in RELATIONSHIPS:
        if rel.resource:
            fields = contract_for(rel.resource).fields
            assert fields[rel.source_key_field] == rel.source.key_type
            assert fields[rel.target_key_field] == rel.target.key_type + ("[]" if rel.many else "")


def test_ids_are_integers_and_keys_are_required():
    users = contract_for("users")
    assert (users.fields["id"], users.keys) == ("integer", ("id",))
    assert ("id",) in users.required and ("email",) in users.required
    assert ("resultId", "imageId") in contract_for("image_scans").required
    assert contract_for("team_memberships").keys == ("teamId", "userId")


def test_no_contract_field_looks_like_a_secret():
    """The scrubber drops secret-looking keys before the contract is checked, unless they hold
    true or false: no other may be needed."""
    for contract in contracts().values():
        for name, type_ in contract.fields.items():
            if any(is_secret(part) for part in name.split(".")):
                assert type_ == "boolean", (contract.resource, name)


def test_true_or_false_under_a_secret_looking_key_is_kept_and_text_is_not():
    scrubber = Scrubber(["tok3n-value"])
    record = {"isPasswordLoginEnabled": False, "config": {"clientSecret": "oidc-abc", "passwordHint": 12345,
                                                           "isTokenAuth": True}}
    assert scrubber.record(record) == {"isPasswordLoginEnabled": False, "config": {"isTokenAuth": True}}
    assert scrubber.column("isPasswordLoginEnabled", [True, None, False]) == [True, None, False]
    assert scrubber.column("config.clientSecret", ["oidc-abc", None]) == [None, None]
    # a name that holds a secret goes whatever its value
    assert scrubber.record({"tok3n-value": True, "x-tok3n-value-secret": False}) == {}
    assert scrubber.column("tok3n-value", [True]) == [None]


@pytest.mark.parametrize(("value", "ms"), [
    ("2024-01-01T00:00:00Z", 1_704_067_200_000),
    ("2024-01-01T00:00:00", 1_704_067_200_000),  # no zone: UTC
    ("2024-01-01T01:00:00+01:00", 1_704_067_200_000),
    ("2024-01-22T08:51:46.016464Z", 1_705_913_506_016),
    (1_704_067_200, 1_704_067_200_000),  # epoch seconds
    (1_704_067_200_000, 1_704_067_200_000),  # epoch milliseconds
    (1_704_067_200.5, 1_704_067_200_500),
    ("1960-05-01T00:00:00Z", -305_164_800_000),
    (-305_164_800, -305_164_800_000),
])
def test_timestamps_are_parsed_per_value(value, ms):
    assert epoch_ms(value) == ms


def test_every_derivation_rule_is_used_and_every_rule_the_model_names_exists():
    from sysdig_j1.model import ENTITIES, RELATIONSHIPS
    from sysdig_j1.transform import DERIVATIONS

    named = {p.derive for owner in (*ENTITIES, *RELATIONSHIPS) for p in owner.properties if p.derive} \
        | {r.target_key_rule for r in RELATIONSHIPS if r.target_key_rule}
    assert named == set(DERIVATIONS)  # (transform refuses to import with a rule missing)
    assert all(isinstance(field, str) and type_ for rule in DERIVATIONS.values() for field, type_ in rule.reads)


def test_a_nested_field_under_a_non_object_is_named():
    with pytest.raises(ContractError, match="field 'customer' is a JSON string, not an object"):
        contract_for("account").values({"customer": "5000001"})


# -- the scrubber ---------------------------------------------------------------------------------
@pytest.mark.parametrize("key", [
    "accessKey", "access-key", "ACCESS_KEY", "api_key", "API-KEY", "apiKey", "password", "Passwd", "pwd",
    "passphrase", "secret", "clientSecret", "client_secret", "token", "X-Auth-Token", "refresh_token",
    "authorization", "Authorization", "bearer", "sshKey", "ssh_private_key", "privateKey", "Cookie",
    "set-cookie", "sessionId", "session_id", "SESSION-ID", "credentials", "jwt", "agentInstallParams",
    "intercomUserIdHash",
])
def test_secret_looking_keys_in_their_usual_spellings(key):
    assert is_secret(key)


@pytest.mark.parametrize("key", ["id", "email", "firstName", "isAdmin", "customer", "externalId", "author",
                                 "mainAssetName", "keyId", "monkey", "sessionCount"])
def test_ordinary_keys_are_kept(key):
    assert not is_secret(key)


def test_connection_secrets_are_redacted_wherever_they_appear():
    scrubber = Scrubber(["sysdig-token-123", "j1-key-4567", None, "abc"])  # too short to redact: abc
    record = {
        "lastName": "sysdig-token-123",
        "notes": ["see j1-key-4567 here", {"deep": "prefix-sysdig-token-123-suffix"}],
        "sysdig-token-123": "a key that is the token",
        "name": "abc",
        "count": 3,
    }

    assert scrubber.record(record) == {
        "lastName": "***", "notes": ["see *** here", {"deep": "prefix-***-suffix"}], "name": "abc", "count": 3}


def test_secret_keys_are_dropped_with_their_whole_value():
    record = {"id": 1, "profile": {"API_KEY": {"nested": "x"}, "items": [{"X-Auth-Token": "t"}], "ok": True}}

    assert Scrubber().record(record) == {"id": 1, "profile": {"items": [{}], "ok": True}}


@pytest.mark.parametrize(("text", "scrubbed"), [
    ("Bearer abcdefgh.ijklmnop", "***"),
    ("authorization: bearer 0123456789abcdef", "authorization: ***"),
    ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJDQU5BUlkifQ.c2lnbmF0dXJlLWNhbmFyeQ and more", "*** and more"),
    ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY----- done", "*** done"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA", "***"),  # cut off: to the end
])
def test_values_that_are_plainly_credentials_are_redacted(text, scrubbed):
    assert Scrubber().text(f"before {text}") == f"before {scrubbed}"


def test_ordinary_text_is_untouched():
    text = "A bearer of good news; the key to success; eyJ is not a JWT on its own"
    assert Scrubber(["sysdig-token-123"]).text(text) == text


def test_depth_is_bounded_and_the_path_named_without_recursion_errors():
    deep: object = 1
    for _ in range(500):
        deep = {"a": deep}
    with pytest.raises(NestedTooDeep, match=rf"nested deeper than {MAX_DEPTH} levels at preferences\.a\.a"):
        Scrubber().record({"id": 1, "preferences": deep})

    shallow: object = "x"
    for _ in range(MAX_DEPTH - 1):
        shallow = [shallow]
    assert Scrubber().record({"list": shallow}) == {"list": shallow}


FINDING = {"findingId": "f1", "resultId": "r1", "vulnerability": {
    "name": "CVE-2024-1", "severity": "high", "exploitable": False, "cvssScore": {"version": "3.1", "score": 7.5}},
           "package": {"name": "curl", "version": "8.0", "type": "os"}}


@pytest.mark.parametrize(("change", "problem"), [
    ({"vulnerability": {**FINDING["vulnerability"], "cvssScore": {"version": "3.1", "score": 2**60}}},
     "'vulnerability.cvssScore.score' should be a number"),
    ({"vulnerability": {**FINDING["vulnerability"], "cvssScore": {"version": "3.1", "score": True}}},
     "should be a number"),
    ({"vulnerability": {**FINDING["vulnerability"], "cvssScore": {"version": "3.1"}}},
     "field 'vulnerability.cvssScore.score' is missing or null, but Sysdig's published model requires it"),
    ({"package": {**FINDING["package"], "isRunning": 1}}, "'package.isRunning' should be true or false"),
    ({"layer": {"baseImages": "debian"}}, "'layer.baseImages' should be a list of text"),
    ({"vulnerability": {**FINDING["vulnerability"], "name": None}}, "'vulnerability.name' is missing"),
    ({"riskAccept": {"expirationDate": "soon"}}, "'riskAccept.expirationDate' is not a date"),
])
def test_the_column_path_refuses_exactly_what_the_record_path_refuses(change, problem):
    from sysdig_j1.raw import encode_page

    contract, scrubber = contract_for("findings"), Scrubber()
    good = [FINDING] * 3
    assert contract.columns(good, scrubber.column) is not None  # findings keep no _rawData: the column path
    bad = [FINDING, {**FINDING, **change}]
    assert contract.columns(bad, scrubber.column) is None
    with pytest.raises(ContractError, match="record 1 .*" + problem.replace("(", r"\(")):
        encode_page(bad, contract, scrubber, "findings: GET /x page 0")


@pytest.mark.parametrize("text", ["-----BEGİN RSA PRIVATE KEY----- abc", "key: -----BEGıN RSA PRIVATE KEY-----",
                                  "Authorization: BEARER abcdefghijkl", "token=tok-secret-1;", "TOK-SECRET-1"])
def test_a_column_is_scrubbed_as_its_records_would_be(text):
    scrubber = Scrubber(["tok-secret-1"])
    values = ["plain", text, None, ["x", text]]
    assert scrubber.column("vulnerability.description", values) == [scrubber.record(v) for v in values]
    assert scrubber.column("vulnerability.description", values) != values
