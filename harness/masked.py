"""A dataclass repr that names which secrets are set but never shows them.

pytest puts reprs into assertion messages, which reach the records database, the logs and
the HTML report; a PIN or a password must not travel with them.
"""

from __future__ import annotations

import dataclasses

MASK = "***"


def masked_repr(obj: object, secrets: frozenset[str] | set[str] | tuple[str, ...]) -> str:
    """``Name(field=value, ...)`` like the dataclass repr, with each set secret shown as ``***``."""
    parts = []
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        if not f.repr:
            continue
        value = getattr(obj, f.name)
        shown = MASK if f.name in secrets and value is not None else repr(value)
        parts.append(f"{f.name}={shown}")
    return f"{type(obj).__name__}({', '.join(parts)})"
