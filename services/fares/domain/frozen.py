"""Building frozen dataclasses fast, for the values pricing makes by the hundred thousand.

A frozen dataclass's own `__init__` stores each field with `object.__setattr__` (its
`__setattr__` refuses), a call that costs several times a plain attribute store, and
calling a class with keyword arguments packs them into a dictionary first: a PricedLeg
built that way costs more than everything else pricing does for its leg. The builder here
is a function with the class's fields as parameters (same order, same defaults; callers
keep their keyword arguments): it stores them on an object of a plain twin class with the
same slots, then makes that object an instance of the frozen class itself. What comes out
is the value `cls(...)` would build: its type is `cls`, it compares, hashes, prints,
pickles and refuses assignment as any other instance does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

P = ParamSpec("P")
T = TypeVar("T")


def fast_builder(cls: Callable[P, T]) -> Callable[P, T]:
    """A constructor of `cls` (a frozen, slotted dataclass without `__post_init__` or
    default factories) that takes the same arguments and returns the same value as
    `cls(...)`, faster."""
    frozen = cast(type, cls)
    params = getattr(frozen, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in frozen.__dict__:
        raise TypeError(f"{frozen.__name__} is not a frozen, slotted dataclass")
    if hasattr(frozen, "__post_init__"):
        raise TypeError(f"{frozen.__name__} checks its fields in __post_init__")
    fields = dataclasses.fields(frozen)
    names = tuple(f.name for f in fields)
    if names != tuple(frozen.__dict__["__slots__"]):
        raise TypeError(f"{frozen.__name__}: its slots are not its fields in order")
    if any(f.default_factory is not dataclasses.MISSING for f in fields):
        raise TypeError(f"{frozen.__name__} has a default factory")
    defaults = tuple(f.default for f in fields)
    twin = type(f"_{frozen.__name__}Fields", (), {"__slots__": names})
    signature = ", ".join(
        name if default is dataclasses.MISSING else f"{name}=_defaults[{i}]"
        for i, (name, default) in enumerate(zip(names, defaults, strict=True))
    )
    stores = "".join(f"    value.{name} = {name}\n" for name in names)
    # Plain attribute stores on the twin, then the twin's object becomes a `cls`: the same
    # slots in the same order, so its layout already is the frozen class's.
    source = (
        f"def build({signature}):\n"
        "    value = _new(_twin)\n"
        f"{stores}"
        "    _become(value, '__class__', _frozen)\n"
        "    return value\n"
    )
    namespace: dict[str, Any] = {
        "_defaults": defaults,
        "_new": object.__new__,
        "_twin": twin,
        "_become": object.__setattr__,
        "_frozen": frozen,
    }
    exec(compile(source, f"<fast_builder {frozen.__name__}>", "exec"), namespace)  # noqa: S102
    build = namespace["build"]
    build.__qualname__ = build.__name__ = f"new_{frozen.__name__}"
    build.__doc__ = f"{frozen.__name__}(...), built without object.__setattr__ per field."
    return cast(Callable[P, T], build)
