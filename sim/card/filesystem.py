"""The card's applications and elementary files, with their access rules.

Three kinds of EF:

* ``BinaryEF``: data read with READ BINARY. ``read`` names the credentials any one of which
  opens it (empty: free to read).
* ``SecretEF``: a PIN, password or check code checked by VERIFY. Its retry counter lives in
  the card state under ``counter``; a correct VERIFY grants ``grants`` for the current
  application session. ``value=None`` is a secret that is not set (face-auth card).
* ``KeyEF``: an RSA private key used by the sign command; ``use`` names the credentials any
  one of which allows a signature (``TERMINAL`` = a terminal authorization, one signature).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from harness.masked import masked_repr

TERMINAL = "terminal-authorization"


@dataclass(frozen=True)
class BinaryEF:
    fid: int
    data: bytes
    read: frozenset[str] = frozenset()


@dataclass(frozen=True)
class SecretEF:
    fid: int
    counter: str
    max_tries: int
    value: str | None
    grants: str
    pattern: str  # the format the card accepts; anything else is 6A80 without spending a try

    def __repr__(self) -> str:  # the secret's value never goes into a log or an assertion message
        return masked_repr(self, {"value"})

    def well_formed(self, candidate: bytes) -> bool:
        try:
            text = candidate.decode("ascii")
        except UnicodeDecodeError:
            return False
        return re.fullmatch(self.pattern, text) is not None


@dataclass(frozen=True)
class KeyEF:
    fid: int
    key: RSAPrivateKey
    use: frozenset[str]


EF = BinaryEF | SecretEF | KeyEF


@dataclass
class Application:
    name: str
    aid: bytes
    files: dict[int, EF] = field(default_factory=dict)

    def add(self, ef: EF) -> None:
        self.files[ef.fid] = ef
