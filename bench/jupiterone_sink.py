"""A JupiterOne for the largest findings benchmark: the emulator's synchronization-job API, counting.

The emulator proper holds every published object as Python dicts and resolves mapped relationships
against them: about 1 KB per object, so 5M findings (some 20M objects with their relationships)
need more memory than this machine has. This one serves the same routes with the same job life
cycle, body limit and graph-object checks, and refuses a repeated `_key` as JupiterOne does, but
of a job's uploads it keeps only a digest of each key and counts per `_type`: enough to check a
first publish into an empty account, which is what the benchmark does. A mapped relationship's
target is counted once per distinct `targetEntity`, as the mapper would create it once.

    python bench/jupiterone_sink.py --port N --account A --api-key K
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

from sysdig_j1_emulators.http import Request, Response
from sysdig_j1_emulators.jupiterone import MAPPER_SCOPE, JupiterOneEmulator, SyncJob


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=12).digest()


class _Counted:
    """Stands in for one kind of a job's uploads (`_key` -> object): `in` and `update`, as the
    emulator's upload checks use them, without holding the objects."""

    def __init__(self) -> None:
        self.keys: set[bytes] = set()
        self.types: Counter[str] = Counter()
        self.targets: dict[str, set[bytes]] = {}  # a mapped target's _type -> its distinct entities

    def __contains__(self, key: str) -> bool:
        return _digest(key) in self.keys

    def update(self, items: Iterable[tuple[str, dict[str, Any]]]) -> None:
        for key, obj in items:
            self.keys.add(_digest(key))
            self.types[obj["_type"]] += 1
            if "_mapping" in obj:
                target = obj["_mapping"]["targetEntity"]
                self.targets.setdefault(target["_type"], set()).add(_digest(json.dumps(target, sort_keys=True)))


class CountingJupiterOne(JupiterOneEmulator):
    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.held: dict[str, dict[str, Counter]] = {}  # scope -> entities/relationships -> _type counts

    def _create_job(self, request: Request) -> Response:
        response = super()._create_job(request)
        job = self._jobs[response.body["job"]["id"]]
        job.uploads = {"entities": _Counted(), "relationships": _Counted()}
        return response

    def _apply_diff(self, job: SyncJob, keep_types: set[str]) -> None:
        if job.scope_key in self.held:
            raise RuntimeError("the counting JupiterOne takes one publish per scope, into an empty account")
        entities, relationships = job.uploads["entities"], job.uploads["relationships"]
        self.held[job.scope_key] = {"entities": entities.types, "relationships": relationships.types}
        mapper = self.held.setdefault(MAPPER_SCOPE, {"entities": Counter(), "relationships": Counter()})
        mapper["entities"].update({type_: len(found) for type_, found in relationships.targets.items()})
        job.fields.update(numEntitiesCreated=entities.types.total(),
                          numRelationshipsCreated=relationships.types.total())

    def summary(self, scope: str | None = None) -> dict[str, dict[str, int]]:
        scopes = [self.held.get(scope, {})] if scope is not None else self.held.values()
        return {name: dict(sum((s.get(name, Counter()) for s in scopes), Counter()))
                for name in ("entities", "relationships")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--account", required=True)
    parser.add_argument("--api-key", required=True)
    args = parser.parse_args()
    CountingJupiterOne(account=args.account, api_key=args.api_key).serve_forever("127.0.0.1", args.port)


if __name__ == "__main__":
    main()
