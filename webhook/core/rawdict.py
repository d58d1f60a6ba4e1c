"""Reading raw Kubernetes objects defensively: the one place that turns "whatever the JSON holds"
into a mapping or a list, so a wrong-typed field reads as absent instead of raising. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def mapping(value: object) -> Mapping[str, Any]:
    """`value` when it is a JSON object, else an empty mapping."""
    if type(value) is dict:  # the common case, without the slower ABC check
        return value
    return value if isinstance(value, Mapping) else {}


def items(value: object) -> list[Any]:
    """`value` when it is a JSON array, else an empty list."""
    return value if type(value) is list else []


def str_map(value: object) -> dict[str, str]:
    """A JSON object of labels/annotations as `str -> str`."""
    return {str(k): str(v) for k, v in mapping(value).items()}
