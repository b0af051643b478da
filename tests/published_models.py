"""Sysdig's published response models as JSON Schemas, to hold the emulator and the source contract
to the shapes a real tenant answers with.

`sysdig-openapi-models.json` (shipped with the emulators, dumped from Sysdig's OpenAPI-generated
Python client) lists, per model, each field's JSON name, type, whether it is required and nullable,
enums and bounds. Each model becomes one JSON Schema definition, strict: a field the model does not
have is an error unless `model.UNPUBLISHED` declares it (a field this project reads that the models
lack, each with its reason). `MEANINGS` adds what the dump cannot carry, from the same client's
field descriptions (the API reference, section 10). `jsonschema` validates.
"""

from __future__ import annotations

import json
import math
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

import sysdig_j1_emulators.sysdig
from sysdig_j1.model import UNPUBLISHED

PUBLISHED = Path(sysdig_j1_emulators.sysdig.__file__).parent / "published"
FACTS = json.loads((PUBLISHED / "sysdig-openapi-models.json").read_text())
MODELS: dict[str, dict[str, dict]] = FACTS["models"]
# Meanings the dump cannot carry (descriptions and examples of the same client), as schema keywords.
MEANINGS: dict[tuple[str, str], dict] = {
    # a rule's evaluationResult is free text in the dump; noPolicy exists only for a whole evaluation
    ("Rule", "evaluationResult"): {"enum": ["passed", "failed", "notApplicable", "accepted"]},
    # the entity types the accepted-risks API names (free text in the dump)
    ("RiskAcceptanceDefinition", "entityType"): {"enum": [
        "imageName", "imagePrefix", "imageSuffix", "vulnerability", "hostName", "hostNameContains",
        "imageNameContains", "policyRule"]},
    ("InventoryPage", "next"): {"minimum": 2},
    ("InventoryPage", "previous"): {"minimum": 1},
}
DATETIME = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
DATE = r"^\d{4}-\d{2}-\d{2}$"
SCALARS = {
    "string": {"type": "string"}, "integer": {"type": "integer"}, "boolean": {"type": "boolean"},
    "number | integer": {"type": "number"}, "Any": {},
    "datetime": {"type": "string", "pattern": DATETIME}, "date": {"type": "string", "pattern": DATE},
}


def response_model(path: str) -> str | None:
    """The published response model of `GET <path>` (a declared endpoint path), or None."""
    for endpoint, model in FACTS["endpoints"].items():
        paths = re.findall(r"(/[\w/{}.-]+)", endpoint)
        if any(_same_path(path, candidate) for candidate in paths):
            return model
    return None


def _same_path(ours: str, theirs: str) -> bool:
    """Paths match with their `{placeholders}` named either way (`{id}` here, `{teamId}` there)."""
    return re.sub(r"\{\w+\}", "{}", ours) == re.sub(r"\{\w+\}", "{}", theirs)


def type_schema(text: str) -> dict:
    """A dumped type ('array<UserResponseV1> | null', 'enum(SAML, OPENID)', ...) as a schema."""
    if text.endswith(" | null"):
        return {"anyOf": [type_schema(text.removesuffix(" | null")), {"type": "null"}]}
    if text in SCALARS:
        return dict(SCALARS[text])
    if match := re.fullmatch(r"enum\((.*)\)", text):
        return {"enum": [value.strip() for value in match[1].split(",")]}
    if match := re.fullmatch(r"array<(.+)>", text):
        return {"type": "array", "items": type_schema(match[1])}
    if match := re.fullmatch(r"map<string, (.+)>", text):
        return {"type": "object", "additionalProperties": type_schema(match[1])}
    if text in MODELS:
        return {"$ref": f"#/$defs/{text}"}
    raise ValueError(f"a dumped type this module does not know: {text!r}")


def _bounded(schema: dict, facts: dict) -> dict:
    """The field's enum and bounds, on the value itself (inside a nullable's anyOf)."""
    keywords = {}
    if "enum" in facts:
        keywords["enum"] = facts["enum"]
    for fact, number, length, items in (("ge", "minimum", "minLength", "minItems"),
                                        ("le", "maximum", "maxLength", "maxItems"),
                                        ("min_length", None, "minLength", "minItems"),
                                        ("max_length", None, "maxLength", "maxItems")):
        if fact in facts:
            base = facts["type"].removesuffix(" | null")
            keyword = items if base.startswith("array<") else number or length
            keywords[keyword] = facts[fact]
    if not keywords:
        return schema
    if "anyOf" in schema:
        return {"anyOf": [{**schema["anyOf"][0], **keywords}, schema["anyOf"][1]]}
    return {**schema, **keywords}


def model_schema(name: str) -> dict:
    fields = MODELS[name]
    if "actual_instance" in fields:  # a pydantic oneOf/anyOf wrapper: one of the validators' models
        kind = "oneOf" if "one_of_schemas" in fields else "anyOf"
        options = [type_schema(facts["type"].removesuffix(" | null")) for field, facts in fields.items()
                   if field.endswith("_validator")]
        return {kind: options}
    extensions = {u.field.partition(".")[0] for u in UNPUBLISHED if u.model == name} - {"*"}
    properties = {
        field: {**_bounded(type_schema(facts["type"]), facts), **MEANINGS.get((name, field), {})}
        for field, facts in fields.items()
    }
    return {
        "type": "object",
        # a declared field the model lacks may hold anything (inside a published map, the map's type holds)
        "properties": {**{field: {} for field in extensions - fields.keys()}, **properties},
        "required": [field for field, facts in fields.items() if facts["required"]],
        "additionalProperties": any(u.model == name and u.field == "*" for u in UNPUBLISHED),
    }


@cache
def validator(model: str) -> jsonschema.Draft202012Validator:
    schema = {"$defs": {name: model_schema(name) for name in MODELS}, "$ref": f"#/$defs/{model}"}
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def problems(model: str, answer: Any) -> list[str]:
    """Every way `answer` breaks `model`: '<JSON path>: <what>', the field named."""
    return sorted(f"{error.json_path}: {error.message}"
                  for error in _leaves(validator(model).iter_errors(answer)))


def _leaves(errors) -> Any:
    """The errors that name a field: a value of a nullable field (anyOf the value and null) is
    reported by what is wrong with it as a value, not as 'not valid under any of the schemas'."""
    for error in errors:
        inner = [e for e in error.context or () if e.schema != {"type": "null"}]
        if error.validator in ("anyOf", "oneOf") and inner:
            yield from _leaves(inner)
        else:
            yield error


def inventory_page_problems(pages: list[dict], page_size: int) -> list[str]:
    """The inventory's paging as published: page.total is the number of pages (not of records),
    every page but the last holds exactly pageSize records, the last at least one; next and
    previous are the neighbouring page numbers."""
    found = []
    records = sum(len(page["data"]) for page in pages)
    expected = math.ceil(records / page_size)
    for number, page in enumerate(pages, 1):
        info = page["page"]
        if info["total"] != expected:
            found.append(f"page {number}: page.total is {info['total']}, but the listing has {expected} pages "
                         f"({records} records, {page_size} a page)")
        if number < len(pages) and len(page["data"]) != page_size:
            found.append(f"page {number}: {len(page['data'])} records on a page that is not the last")
        if info.get("next") != (number + 1 if number < len(pages) else None):
            found.append(f"page {number}: page.next is {info.get('next')}")
        if info.get("previous") != (number - 1 if number > 1 else None):
            found.append(f"page {number}: page.previous is {info.get('previous')}")
    return found
