"""The one cattrs converter that turns DCImanager JSON into :mod:`.models` objects.

Reading is lenient, because DCImanager's payloads are only partly documented:

* unknown fields are ignored;
* unknown enum values are kept as plain strings (``PowerStatus | str``);
* ``roles`` may be the string ``"[@user]"`` or a list; both become a tuple;
* ``task`` may be a string or a number; it becomes a string;
* ``null`` where a list is expected becomes ``()``, ``null`` for a text field ``""``.

The hot path runs hand-tuned structure functions generated once per model class
(:mod:`._structgen`). Only when that fails does a detailed cattrs converter (same
configuration) run over the payload to name the bad field via
:func:`cattrs.transform_error`.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable, Mapping
from itertools import repeat
from types import MappingProxyType
from typing import Any, Final, TypeVar, get_args, get_origin

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, override

from dci6bridge.errors import ResponseValidationError

from . import models
from ._structgen import float_value, int_value, make_structure_fn

__all__ = [
    "CONVERTER",
    "Converter",
    "decode_json",
    "encode_json",
    "make_converter",
    "parser",
    "structure",
    "structure_list",
]

T = TypeVar("T")

try:  # orjson is the optional "fast" extra: same results, faster (see benchmarks)
    import orjson

    _loads: Callable[[bytes | str], Any] = orjson.loads

    def encode_json(value: Any) -> bytes:
        """``value`` as compact UTF-8 JSON bytes."""
        return orjson.dumps(value)

except ImportError:  # pragma: no cover - exercised only without the extra
    _loads = json.loads

    def encode_json(value: Any) -> bytes:
        """``value`` as compact UTF-8 JSON bytes."""
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def decode_json(content: bytes | str) -> Any:
    """Parse a JSON document (orjson when installed). Raises ``ValueError`` on bad JSON."""
    return _loads(content)


# --------------------------------------------------------------------------- hooks

_ENUMS: Final = (models.PowerStatus, models.OperationStatus, models.PortStatus)


def _text(value: Any, _type: Any) -> str:
    if value.__class__ is str:
        return value
    return "" if value is None else str(value)


def _roles(value: Any, _type: Any) -> tuple[str, ...]:
    """``"[@user]"``, ``"@admin, @user"``, ``["@user"]`` or ``null`` → a tuple of roles."""
    if value is None:
        return ()
    if isinstance(value, str):
        inner = value.strip().removeprefix("[").removesuffix("]")
        return tuple(r.strip().strip("'\"") for r in inner.split(",") if r.strip())
    if isinstance(value, (list, tuple)):
        return tuple(str(r) for r in value)
    raise TypeError(f"roles must be a string or a list, not {type(value).__name__}")


def _task(value: Any, _type: Any) -> str | None:
    if value is None or value.__class__ is str:
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(int(value))
    raise TypeError(f"task must be a string or a number, not {type(value).__name__}")


def _enum_or_str_hook(enum_cls: type[enum.Enum]) -> Callable[[Any, Any], Any]:
    lookup = enum_cls._value2member_map_

    def hook(value: Any, _type: Any) -> Any:
        if value is None:
            return None
        if value.__class__ is not str:
            value = str(value)
        return lookup.get(value, value)

    return hook


def _is_enum_or_str(t: Any) -> type[enum.Enum] | None:
    args = get_args(t)
    if str in args:
        for a in args:
            if a in _ENUMS:
                return a  # type: ignore[no-any-return]
    return None


def _is_homogeneous_tuple(t: Any) -> bool:
    args = get_args(t)
    return get_origin(t) is tuple and len(args) == 2 and args[1] is Ellipsis


_OVERRIDES: Final[Mapping[type, Mapping[str, Any]]] = MappingProxyType(
    {
        models.User: {"roles": override(struct_hook=_roles)},
        models.ActionResult: {"task": override(struct_hook=_task)},
    }
)


Converter = cattrs.Converter


def make_converter(*, detailed: bool = False, forbid_extra_keys: bool = False) -> Converter:
    """Build the client's converter.

    ``detailed`` turns on cattrs' detailed validation (slower; used to explain a failure).
    ``forbid_extra_keys`` makes unknown fields an error, for tests that want to notice
    fields the models do not know yet.
    """
    conv = cattrs.Converter(detailed_validation=detailed, forbid_extra_keys=forbid_extra_keys)
    conv.register_structure_hook(str, _text)
    conv.register_structure_hook(int, lambda v, _t: int_value(v))
    conv.register_structure_hook(float, lambda v, _t: float_value(v))

    def enum_factory(t: Any) -> Callable[[Any, Any], Any]:
        enum_cls = _is_enum_or_str(t)
        assert enum_cls is not None
        return _enum_or_str_hook(enum_cls)

    conv.register_structure_hook_factory(lambda t: _is_enum_or_str(t) is not None, enum_factory)

    def tuple_factory(t: Any) -> Callable[[Any, Any], tuple[Any, ...]]:
        item_type = get_args(t)[0]
        item_hook = conv.get_structure_hook(item_type)
        if detailed:  # the list hook reports the failing index
            list_type = list[item_type]  # type: ignore[valid-type]
            list_hook = conv.get_structure_hook(list_type)

            def detailed_hook(value: Any, _t: Any) -> tuple[Any, ...]:
                return () if value is None else tuple(list_hook(value, list_type))

            return detailed_hook

        def hook(value: Any, _t: Any) -> tuple[Any, ...]:
            if value is None:
                return ()
            return tuple([item_hook(v, item_type) for v in value])

        return hook

    conv.register_structure_hook_factory(_is_homogeneous_tuple, tuple_factory)

    def attrs_factory(cls: type[Any]) -> Callable[[Mapping[str, Any], Any], Any]:
        overrides = _OVERRIDES.get(cls, {})
        if not detailed and not forbid_extra_keys:
            hooks = {name: ov.struct_hook for name, ov in overrides.items()}
            return make_structure_fn(cls, conv, _text, hooks)
        inner = make_dict_structure_fn(
            cls,
            conv,
            _cattrs_forbid_extra_keys=forbid_extra_keys,
            _cattrs_detailed_validation=detailed,
            **overrides,
        )

        def objects_only(value: Any, t: Any) -> Any:
            # cattrs would read "" or [] as an object with every field absent
            if not isinstance(value, Mapping):
                raise TypeError(f"expected a JSON object, got {type(value).__name__}")
            return inner(value, t)

        return objects_only

    conv.register_structure_hook_factory(attrs.has, attrs_factory)
    return conv


CONVERTER: Final = make_converter()
"""The lenient converter every client uses. Configured once here, never mutated after."""

_AT_PATH = re.compile(r" @ (\$\S*)$")


def _explain(data: Any, target: Any, root: str) -> ResponseValidationError:
    """Re-run the structuring with detailed validation to name the bad field."""
    try:
        make_converter(detailed=True).structure(data, target)
    except Exception as exc:
        details = cattrs.transform_error(exc, path=root)
        match = _AT_PATH.search(details[0]) if details else None
        field = match.group(1) if match else root
        return ResponseValidationError(
            f"unexpected response shape at {field}: {details[0] if details else exc}",
            field=field,
            details=details,
        )
    return ResponseValidationError(f"unexpected response shape at {root}", field=root)


def structure(data: Any, cls: type[T], *, root: str = "$") -> T:
    """``data`` as a ``cls`` model; :class:`ResponseValidationError` names a bad field."""
    try:
        return CONVERTER.structure(data, cls)
    except Exception:
        raise _explain(data, cls, root) from None


def parser(cls: type[T]) -> Callable[[Any], T]:
    """A one-argument parse function for ``cls`` (its hook looked up once, not per call)."""
    hook = CONVERTER.get_structure_hook(cls)

    def parse(data: Any) -> T:
        try:
            return hook(data, cls)  # type: ignore[no-any-return]
        except Exception:
            raise _explain(data, cls, "$") from None

    return parse


def structure_list(data: Any, cls: type[T], *, key: str = "list") -> list[T]:
    """The items of a list envelope ``{"list": [...], ...}`` as ``cls`` models."""
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise ResponseValidationError(
            f"expected an object with a {key!r} list, got {type(data).__name__}",
            field=f"$.{key}",
        )
    items = data[key]
    hook = CONVERTER.get_structure_hook(cls)
    try:
        return list(map(hook, items, repeat(cls)))
    except Exception:
        raise _explain(items, list[cls], f"$.{key}") from None  # type: ignore[valid-type]
