"""Comparing a state dict read from a file with the one a model expects.

Every checkpoint loader (policy, world model, VGGT, CLIP, reflector) refuses a file whose keys
or shapes do not fit, and names what is wrong; this is the one comparison they share. Each
caller words its own error, since the fix it suggests differs (a config key, a preset).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass
class StateDictMismatch:
    """What separates two state dicts.

    Attributes:
        missing: expected keys the file lacks (sorted).
        unexpected: keys of the file the model does not have (sorted).
        wrong_shapes: (key, shape in the file, expected shape) for shared keys, in file order.
    """

    missing: list[str]
    unexpected: list[str]
    wrong_shapes: list[tuple[str, tuple[int, ...], tuple[int, ...]]]

    @property
    def keys_differ(self) -> bool:
        return bool(self.missing or self.unexpected)

    def __bool__(self) -> bool:
        return self.keys_differ or bool(self.wrong_shapes)


def compare_state_dicts(expected: Mapping[str, Any], found: Mapping[str, Any]) -> StateDictMismatch:
    """Compare ``found`` (read from a file) with ``expected`` (the model's); tensors or
    anything with a ``shape``."""
    return StateDictMismatch(
        missing=sorted(set(expected) - set(found)),
        unexpected=sorted(set(found) - set(expected)),
        wrong_shapes=[
            (k, tuple(v.shape), tuple(expected[k].shape))
            for k, v in found.items()
            if k in expected and tuple(v.shape) != tuple(expected[k].shape)
        ],
    )
