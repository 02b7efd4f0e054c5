"""Argument checks of handgeom's Python layer, shared by every public entry point.

A :class:`Checker` is made once per call, named after the function; each failure raises an error
whose message names the function and the argument and says what was expected and what came:
``TypeError`` for a wrong type or dtype, ``ValueError`` for a wrong shape or value. (The
operators check their own tensors in C++, with ``RuntimeError``; see ``csrc/common/checks.h``.)

Shapes are written as tuples: an ``int`` is an exact size, ``None`` any size, a string a named
size that must agree across the arguments of one call, and a leading ``"..."`` a batch shape that
must agree likewise::

    ck = Checker("intersection_loss")
    ck.tensor(joints_left, "joints_left", ("B", 21, 3))
    ck.tensor(joints_right, "joints_right", ("B", 21, 3), like=joints_left)  # the same B, dtype, device
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import NoReturn, Sequence

import torch

Shape = tuple  # of int | str | None, optionally starting with "..."

_KINDS = {"float": ("floating point", torch.Tensor.is_floating_point),
          "int": ("integer", lambda t: not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)),
          "bool": ("bool", lambda t: t.dtype == torch.bool)}


class Checker:
    """The checks of one call of ``where``; named sizes bind on first use (see the module doc)."""

    def __init__(self, where: str):
        self.where = where
        self.dims: dict[str, int | tuple[int, ...]] = {}

    def fail(self, message: str, error: type[Exception] = ValueError) -> NoReturn:
        raise error(f"{self.where}: {message}")

    def tensor(self, value, name: str, shape: Shape | list[Shape] | None = None, kind: str | None = "float",
               like: torch.Tensor | None = None) -> torch.Tensor:
        """``value`` as a tensor of ``kind`` (``"float"``, ``"int"``, ``"bool"`` or None for any)
        with one of the ``shape`` patterns; ``like``: the same device as that tensor, and the same
        dtype unless autocast is on (it casts the operators' inputs itself)."""
        if not isinstance(value, torch.Tensor):
            self.fail(f"{name} must be a tensor, got {type(value).__name__}", TypeError)
        if kind is not None and not _KINDS[kind][1](value):
            self.fail(f"{name} must be a {_KINDS[kind][0]} tensor, got {value.dtype}", TypeError)
        if like is not None and value.dtype != like.dtype and not torch.is_autocast_enabled(value.device.type):
            self.fail(f"{name} must have dtype {like.dtype} (as the other inputs), got {value.dtype}", TypeError)
        if like is not None and value.device != like.device:
            self.fail(f"{name} must be on device {like.device} (as the other inputs), got {value.device}")
        if shape is not None:
            patterns = shape if isinstance(shape, list) else [shape]
            for pattern in patterns:
                bound = self._match(tuple(value.shape), pattern)
                if bound is not None:
                    self.dims.update(bound)
                    break
            else:
                known = sorted({d for p in patterns for d in p if isinstance(d, str) and d in self.dims})
                given = ", ".join(f"{d} = {_show(self.dims[d]) if d == '...' else self.dims[d]}" for d in known)
                self.fail(f"{name} must have shape {' or '.join(_show(p) for p in patterns)}"
                          f"{' with ' + given if given else ''}, got {_show(value.shape)}")
        return value

    def _match(self, size: tuple[int, ...], pattern: Shape) -> dict | None:
        """The named sizes ``size`` binds to ``pattern``, or None when it does not fit."""
        bound: dict = {}
        if pattern[:1] == ("...",):
            pattern = pattern[1:]
            if len(size) < len(pattern):
                return None
            bound["..."], size = size[:len(size) - len(pattern)], size[len(size) - len(pattern):]
        if len(size) != len(pattern):
            return None
        bound.update({d: n for d, n in zip(pattern, size) if isinstance(d, str)})
        if any(isinstance(d, int) and d != n for d, n in zip(pattern, size)):
            return None
        if any(d in self.dims and self.dims[d] != n for d, n in bound.items()):
            return None
        if any(isinstance(d, str) and bound[d] != n for d, n in zip(pattern, size)):  # one name, two sizes
            return None
        return bound

    def finite(self, finite: torch.Tensor, name: str, item: str) -> None:
        """Every entry of the per-item flags ``finite [B]`` holds (see :func:`finite_items`)."""
        if not bool(finite.all()):
            index = int((~finite).nonzero()[0, 0])
            self.fail(f"{name} of {item} {index} has a non-finite value (NaN or Inf); {self.where} has no "
                      "result for it")

    def real(self, value, name: str, minimum: float | None = None, positive: bool = False) -> float:
        """``value`` as a finite real number (not a bool), at least ``minimum``, or above 0."""
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            self.fail(f"{name} must be a real number, got {type(value).__name__}", TypeError)
        value = float(value)
        if not math.isfinite(value):
            self.fail(f"{name} must be finite, got {value}")
        if positive and not value > 0:
            self.fail(f"{name} must be positive, got {value}")
        if minimum is not None and value < minimum:
            self.fail(f"{name} must be at least {minimum}, got {value}")
        return value

    def integer(self, value, name: str, minimum: int | None = None) -> int:
        """``value`` as an int (Python, NumPy or 0-dim integer tensor; not a bool), at least ``minimum``."""
        try:
            number = None if isinstance(value, bool) else operator.index(value)
        except TypeError:
            number = None
        if number is None:
            self.fail(f"{name} must be an integer, got {value!r}", TypeError)
        value = number
        if minimum is not None and value < minimum:
            self.fail(f"{name} must be at least {minimum}, got {value}")
        return value

    def choice(self, value, name: str, options: Sequence[str]) -> str:
        if value not in options:
            listed = ", ".join(repr(o) for o in options[:-1]) + f" or {options[-1]!r}"
            self.fail(f"{name} must be {listed}, got {value!r}")
        return value


def finite_items(t: torch.Tensor) -> torch.Tensor:
    """``[B]`` bool: whether every value of each item ``t[b]`` is finite."""
    return torch.isfinite(t).flatten(1).all(1)


def _show(shape) -> str:
    return "[" + ", ".join("*" if d is None else str(d) for d in shape) + "]"
