"""Remove secrets from Sysdig records and from any text before it is stored, logged or raised.

Three kinds of secret are removed:
- by key: any field whose name looks like a credential (`accessKey`, `api-key`, `pwd`, `Cookie`,
  `X-Auth-Token`, ...) is dropped with its whole value, wherever it is nested, unless the value is
  true or false (`isPasswordLoginEnabled` tells whether, never what);
- by value: the connection's own secrets (the Sysdig token, the JupiterOne key), wherever they
  appear inside a string, and values that are plainly credentials (`Bearer ...`, JWTs, PEM
  private keys) are replaced with `***`;
- by depth: a record nested deeper than `MAX_DEPTH` is refused, so scrubbing never recurses
  without bound (no real API record comes close).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

REDACTED = "***"
MAX_DEPTH = 32
KEY_CACHE_SIZE = 65_536
MIN_SECRET_LENGTH = 5  # as Airflow's masker: shorter values would redact ordinary words

# Key names are compared lower-cased with everything but letters and digits removed, so
# `api-key`, `API_KEY` and `apiKey` are one spelling.
SECRET_KEY_WORDS = (
    "password", "passwd", "pwd", "passphrase", "secret", "token", "apikey", "accesskey", "privatekey",
    "sshkey", "credential", "authorization", "authheader", "bearer", "cookie", "sessionid", "jwt",
    "agentinstallparams", "intercomuseridhash",
)
CREDENTIAL_VALUES = re.compile(
    r"\bbearer\s+[A-Za-z0-9._~+/=-]{8,}"  # an Authorization header value
    r"|\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"  # a JWT (base64 of '{"')
    r"|-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)",
    re.IGNORECASE | re.DOTALL,
)


CREDENTIAL_TRIGGERS = ("bearer", "eyj", "-----begin")  # what each credential pattern starts with


class NestedTooDeep(ValueError):
    """A record nests objects or arrays deeper than MAX_DEPTH; `path` says where."""

    def __init__(self, path: str) -> None:
        super().__init__(f"nested deeper than {MAX_DEPTH} levels")
        self.path = path


def is_secret(key: str) -> bool:
    normalised = re.sub(r"[^a-z0-9]", "", key.lower())
    return any(word in normalised for word in SECRET_KEY_WORDS)


class Scrubber:
    """Scrubs records and text of one connection's secrets (and of credential-looking values)."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self.secrets = tuple(sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True))
        known = "|".join(re.escape(s) for s in self.secrets)
        self._values = re.compile(f"{known}|{CREDENTIAL_VALUES.pattern}" if known else CREDENTIAL_VALUES.pattern,
                                  CREDENTIAL_VALUES.flags)
        self._drop_key: dict[str, bool] = {}  # the same few keys repeat in every record
        # ASCII text without any of these (lower-cased, as the pattern ignores case) cannot match it.
        self._triggers = tuple({s.lower() for s in self.secrets} | set(CREDENTIAL_TRIGGERS))
        self._ascii_triggers = all(trigger.isascii() for trigger in self._triggers)

    def keeps_flag(self, key: str, value: Any) -> bool:
        """true/false under a credential-sounding name (isPasswordLoginEnabled) says whether, never
        what: kept, unless the name itself holds a secret."""
        return type(value) is bool and self._values.search(key) is None

    def drops(self, key: str) -> bool:
        """A key that names a credential or holds a secret goes, with its whole value."""
        verdict = self._drop_key.get(key)
        if verdict is None:
            verdict = is_secret(key) or self._values.search(key) is not None
            if len(self._drop_key) < KEY_CACHE_SIZE:  # data keyed by ids must not grow it forever
                self._drop_key[key] = verdict
        return verdict

    def text(self, value: str) -> str:
        """`value` with every secret in it replaced by ***."""
        return self._values.sub(REDACTED, value)

    def column(self, field: str, values: list) -> list:
        """One field's values across records, scrubbed as `record` would scrub them: a field whose
        path names a credential is dropped; texts (and lists of texts) lose their secrets. The
        texts are searched joined, once, and only on a hit one by one: a secret inside one value
        is found in the joined text at the same place."""
        if any(self.drops(part) and not all(self.keeps_flag(part, v) for v in values if v is not None)
               for part in field.split(".")):
            return [None] * len(values)
        texts = [v for v in values if type(v) is str] + [x for v in values if type(v) is list for x in v
                                                          if type(x) is str]
        joined = "\x00".join(texts)
        if joined.isascii() and self._ascii_triggers:  # ignoring case is lower-casing: C-speed substring tests
            clean = not any(trigger in joined.lower() for trigger in self._triggers)
        else:  # Unicode case-insensitivity has its own equivalences (ı, İ, ſ...): the pattern decides
            clean = self._values.search(joined) is None
        if clean:
            return values
        return [self.record(v) for v in values]

    def record(self, value: Any, depth: int = 0) -> Any:
        """A copy of a decoded JSON value without secret keys or secret values."""
        if isinstance(value, str):
            return self.text(value)
        if not isinstance(value, (dict, list)):
            return value
        if depth >= MAX_DEPTH:
            raise NestedTooDeep("")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        out = {} if isinstance(value, dict) else [None] * len(value)
        for key, item in items:
            if isinstance(key, str) and self.drops(key) and not self.keeps_flag(key, item):
                continue
            if isinstance(item, str):  # most values: handled here, without a call per value
                out[key] = self._values.sub(REDACTED, item)
            elif isinstance(item, (dict, list)):
                try:
                    out[key] = self.record(item, depth + 1)
                except NestedTooDeep as exc:  # the path is only built on the way out of a failure
                    exc.path = (f"[{key}]" if isinstance(key, int) else f".{key}") + exc.path
                    exc.args = (f"nested deeper than {MAX_DEPTH} levels at {exc.path.lstrip('.')}",)
                    raise
            else:
                out[key] = item
        return out
