"""Remove secrets from Sysdig records before they are stored anywhere.

`/api/users/me` returns the agent access key, the customer access key and an Intercom hash next to
harmless profile data; none of it may reach object storage, logs or JupiterOne's `_rawData`.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

SECRET_KEYS = frozenset({"accessKey", "agentInstallParams", "intercomUserIdHash"})
# Anything that looks like a credential by name, wherever it is nested.
TOKEN_LIKE = re.compile(r"(token|secret|passw|api_?key|access_?key|private_?key|credential)", re.IGNORECASE)


@lru_cache(maxsize=8192)  # the same few keys repeat in every record
def is_secret(key: str) -> bool:
    return key in SECRET_KEYS or TOKEN_LIKE.search(key) is not None


def scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if not is_secret(k)}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value
