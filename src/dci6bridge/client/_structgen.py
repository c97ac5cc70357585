"""Hand-tuned structure functions for the attrs models (the converter's hot path).

cattrs' generated functions call one hook per field through its dispatch, and wrap
optional fields in a generic helper; on a 10,000-server list that costs more than the
JSON decoding. This module generates, once per class, a plain function that converts
each field inline (``v if v.__class__ is str else ...``), calls nested classes'
functions directly, and fills the slots of a private unfrozen twin of the class with plain
attribute stores before switching the finished object to the real class. Semantics match
the lenient converter (a property test compares them); any exception falls back to the
detailed converter, which explains it.
"""

from __future__ import annotations

import enum
import linecache
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Final, get_args, get_origin

import attrs

__all__ = ["float_value", "int_value", "make_structure_fn"]

Hook = Callable[[Any, Any], Any]
_NONE: Final = type(None)


class _Missing:
    """The marker for "key absent"; distinct from a JSON ``null``."""


_MISSING: Final = _Missing()


def int_value(v: Any) -> int:
    """JSON number (or numeric string) → ``int``; ``true``/``null`` are not numbers."""
    if v.__class__ is bool or v is None:
        raise TypeError(f"expected an integer, got {v!r}")
    return int(v)


def float_value(v: Any) -> float:
    """JSON number (or numeric string) → ``float``; ``true``/``null`` are not numbers."""
    if v.__class__ is bool or v is None:
        raise TypeError(f"expected a number, got {v!r}")
    return float(v)


class _Gen:
    """Collects the names a generated function refers to."""

    def __init__(self, conv: Any, text: Hook) -> None:
        self.conv = conv
        self.ns: dict[str, Any] = {
            "_M": _MISSING,
            "_int": int_value,
            "_float": float_value,
            "_text": text,
        }

    def bind(self, prefix: str, value: Any) -> str:
        name = f"_{prefix}{len(self.ns)}"
        self.ns[name] = value
        return name

    def expr(self, t: Any, v: str = "v") -> str:
        """Python expression converting the variable named ``v`` to type ``t``."""
        origin, args = get_origin(t), get_args(t)
        if t is Any:
            return v
        if t is str:
            return f"({v} if {v}.__class__ is str else _text({v}, None))"
        if t is int:
            return f"({v} if {v}.__class__ is int else _int({v}))"
        if t is float:
            return f"({v} if {v}.__class__ is float else _float({v}))"
        if t is bool:
            return f"({v} if {v}.__class__ is bool else bool({v}))"
        if attrs.has(t):
            return f"{self.bind('f', self.conv.get_structure_hook(t))}({v}, None)"
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            if attrs.has(args[0]):  # map() skips the comprehension's frame
                fn = self.bind("f", self.conv.get_structure_hook(args[0]))
                return f"(() if {v} is None else tuple(map({fn}, {v})))"
            if args[0] is Any:
                return f"(() if {v} is None else tuple({v}))"
            x = v + "_"
            return f"(() if {v} is None else tuple([{self.expr(args[0], x)} for {x} in {v}]))"
        if _is_union(t):
            members = [a for a in args if a is not _NONE]
            enums = [a for a in members if isinstance(a, type) and issubclass(a, enum.Enum)]
            if enums and str in members and len(members) == 2:
                lookup = self.bind("lk", dict(enums[0]._value2member_map_))
                slow = self.bind("h", self.conv.get_structure_hook(t))
                return (
                    f"({lookup}.get({v}, {v}) if {v}.__class__ is str "
                    f"else None if {v} is None else {slow}({v}, None))"
                )
            # the usual case, a value of the right type, costs a single test
            if members == [str]:
                return f"({v} if {v}.__class__ is str or {v} is None else _text({v}, None))"
            if members == [int]:
                return f"({v} if {v}.__class__ is int or {v} is None else _int({v}))"
            if len(members) == 1:
                return f"(None if {v} is None else {self.expr(members[0], v)})"
        hook = self.bind("h", self.conv.get_structure_hook(t))
        return f"{hook}({v}, {self.bind('t', t)})"


def _filler(cls: type[Any]) -> type[Any] | None:
    """A private unfrozen twin of ``cls`` to fill an instance in, when that is
    equivalent to calling ``cls(...)``; else ``None``.

    The twin adds no slots and only restores plain attribute assignment, so an instance
    filled in it has exactly the layout of ``cls`` and can be switched to ``cls`` by
    assigning ``__class__``. Plain assignment to a slot is a specialised bytecode on
    CPython 3.11+; the frozen ``__init__`` instead calls ``object.__setattr__`` per
    field, and even the slot descriptors' setters cost a call each.
    """
    if hasattr(cls, "__attrs_post_init__") or hasattr(cls, "__attrs_pre_init__"):
        return None
    if "__slots__" not in cls.__dict__:
        return None
    for f in attrs.fields(cls):
        if f.validator is not None or f.converter is not None or not f.init:
            return None
        slot = next((k.__dict__[f.name] for k in cls.__mro__ if f.name in k.__dict__), None)
        if not isinstance(slot, types.MemberDescriptorType):
            return None
    # both hooks of the setattr slot must be object's, or CPython keeps the slow
    # generic path that looks ``__setattr__`` up on every store
    namespace = {
        "__slots__": (),
        "__setattr__": object.__setattr__,
        "__delattr__": object.__delattr__,
        "__module__": __name__,
    }
    twin = type(f"_Filling{cls.__name__}", (cls,), namespace)
    try:
        probe: Any = object.__new__(twin)
        probe.__class__ = cls
    except TypeError:  # a layout CPython will not switch: build with cls(...) instead
        return None
    return twin


def _null_is_default(t: Any, default: Any) -> bool:
    """Whether converting ``None`` to ``t`` yields ``default`` (so absence needs no check)."""
    if default is None:
        return _is_union(t) and _NONE in get_args(t)
    if default == () and get_origin(t) is tuple:
        return True
    if default is False and t is bool:
        return True
    return default == "" and t is str


def _is_union(t: Any) -> bool:
    origin = get_origin(t)
    return origin is typing.Union or (origin is not None and origin.__name__ == "UnionType")


def make_structure_fn(cls: type[Any], conv: Any, text: Hook, overrides: Mapping[str, Hook]) -> Hook:
    """A fast ``structure(obj, _type=None)`` for the attrs class ``cls``.

    The second parameter is optional so tuple fields can ``map()`` item functions.
    """
    gen = _Gen(conv, text)
    hints = typing.get_type_hints(cls)
    fields = attrs.fields(cls)
    reads = []  # per field: a statement binding ``v``, and the converting expression
    for field in fields:
        key = field.name
        if key in overrides:
            conv_expr = f"{gen.bind('ov', overrides[key])}(v, None)"
        else:
            conv_expr = gen.expr(hints[key])
        if field.default is attrs.NOTHING:
            reads.append((f"v = o[{key!r}]", conv_expr))
        elif key not in overrides and _null_is_default(hints[key], field.default):
            # an absent key reads as null, and null converts to the default anyway
            reads.append((f"v = g({key!r})", conv_expr))
        else:
            default = gen.bind("d", field.default)
            reads.append((f"v = g({key!r}, _M)", f"{default} if v is _M else {conv_expr}"))
    gen.ns["_cls"] = cls
    lines = [f"def structure_{cls.__name__}(o, _=None):", "    g = o.get"]
    twin = _filler(cls)
    if twin is not None:
        gen.ns["_new"] = object.__new__
        gen.ns["_twin"] = twin
        lines.append("    obj = _new(_twin)")
        for field, (read, value) in zip(fields, reads, strict=True):
            lines += [f"    {read}", f"    obj.{field.name} = {value}"]
        # a failure above drops the half-filled twin; only whole objects become ``cls``
        lines += ["    obj.__class__ = _cls", "    return obj"]
    else:
        for i, (read, value) in enumerate(reads):
            lines += [f"    {read}", f"    a{i} = {value}"]
        lines.append(f"    return _cls({', '.join(f'a{i}' for i in range(len(reads)))})")
    source = "\n".join(lines) + "\n"
    filename = f"<dci6bridge structure {cls.__module__}.{cls.__qualname__}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), gen.ns)  # noqa: S102 - our own generated code
    fn: Hook = gen.ns[f"structure_{cls.__name__}"]
    return fn
