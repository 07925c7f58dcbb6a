"""Parse and format the ``name:key=value,key=value`` strings used for presets and layer kinds.

Example:
    >>> parse_named("torch.kaiming_normal:a=0.2,mode=fan_out")
    ('torch.kaiming_normal', {'a': 0.2, 'mode': 'fan_out'})
"""

from __future__ import annotations

from typing import Any


def _parse_value(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text.strip()


def parse_named(text: str) -> tuple[str, dict[str, Any]]:
    """Split ``"name:k=v,k2=v2"`` into the name and a dict of parsed values."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"Expected a name such as 'he_normal' or 'torch.conv:groups=4'. Received: {text!r}.")
    name, _, rest = text.strip().partition(":")
    params: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"Arguments after ':' must be key=value pairs separated by commas. Received: {text!r}.")
        params[key.strip()] = _parse_value(value)
    return name.strip(), params


def format_named(name: str, params: dict[str, Any]) -> str:
    """Inverse of :func:`parse_named` for simple values."""
    if not params:
        return name
    return name + ":" + ",".join(f"{k}={v}" for k, v in params.items())
