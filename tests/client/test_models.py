"""Lenient reading of the vendor's documented example payloads (F1-F8 of the reference,
copied verbatim) and of the quirks the reference lists."""

from __future__ import annotations

import json
import pickle
from typing import Any

import attrs
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dci6bridge as d
from dci6bridge.client._converter import make_converter, structure
from dci6bridge.client.models import OperationStatus, OsTemplateRef, PortStatus, PowerStatus

from .conftest import MockApi

F1 = '{"list": [{"configuration": "i9-9900K-64Gb-2x1024NVMe", "free_server_count": 42}]}'

F2 = """
{
  "list": [
    {
      "operation": {"id": 0, "status": "string", "status_info": {}, "progress_info": [{}]},
      "domain": "string",
      "id": 0,
      "os_template": {"id": 0, "name": "string", "tags": ["string"]},
      "hardware_info": {},
      "perform_info": {},
      "configuration": "string",
      "settings": {"efi": true},
      "state": "suspending",
      "state_info": "string",
      "ip": [
        {"domain": "string", "family": "ipv4", "gateway": "string", "id": 0, "name": "string",
         "network": "string", "status": "allocating", "status_info": {}}
      ],
      "switch_connection": [
        {"id": 0, "switch": 0, "connection_id": 0, "description": "string", "admin_status": "up",
         "oper_status": "up", "do_not_collect_traffic": true, "is_ipmi_connection": true}
      ],
      "pdu_connection": {"port_id": 0, "port_identity": "string", "pdu_id": 0, "pdu_name": "string",
                         "connection_id": 0}
    }
  ]
}
"""

F4 = (
    '{"list": [{"id": 0, "email": "string", "server_count": 0, "roles": "[@user]", '
    '"vlans_per_user": 5}]}'
)
F5_REQUEST = (
    '{"email":"admin@example.com","full_name":"name","password":"pass",'
    '"phone_number":"phone","role":"level"}'
)
F5_RESPONSE = '{"id": 0}'
F6 = '{"error": {"code": 1106, "msg": "...", "value": {}}}'
F7 = '{"error": {"code": 3001, "msg": "Unauthorized"}}'
F8 = '{"error": "Invalid parameter", "code": 400, "field": "email"}'
F10 = '{"id":"4","key":"4-74e7c0e9-a5ff-4f52-a2ac-ed03c6ed1e21"}'


def serve(api: MockApi, method: str, path: str, text: str, status: int = 200) -> None:
    api.on(method, path, httpx.Response(status, content=text.encode()))


def test_f1_configurations(api: MockApi, make_client) -> None:
    serve(api, "GET", "/api/dci/v3/server/configuration", F1)
    assert make_client().servers.configurations() == [
        d.ConfigurationCount(configuration="i9-9900K-64Gb-2x1024NVMe", free_server_count=42)
    ]


def test_f2_server_list(api: MockApi, make_client) -> None:
    serve(api, "GET", "/api/dci/v3/server", F2)
    (server,) = list(make_client().servers.list())
    assert server.id == 0
    assert server.state == "suspending"
    assert server.configuration == "string"
    assert server.operation == d.Operation(
        id=0, status="string", status_info={}, progress_info=({},)
    )
    assert not server.operation.is_terminal
    assert server.os_template is not None
    assert server.os_template.tags == ("string",)
    assert server.ip == (
        d.ServerIp(
            id=0,
            name="string",
            family="ipv4",
            domain="string",
            gateway="string",
            network="string",
            status="allocating",
        ),
    )
    (conn,) = server.switch_connection
    assert conn.admin_status is PortStatus.UP
    assert conn.is_ipmi_connection is True
    assert conn.do_not_collect_traffic is True
    assert server.data_connections == ()


def test_f3_one_server(api: MockApi, make_client) -> None:
    item = json.dumps(json.loads(F2)["list"][0])
    serve(api, "GET", "/api/dci/v3/server/2", item)
    assert make_client().servers.get(2).id == 0


def test_f4_users_roles_string(api: MockApi, make_client) -> None:
    serve(api, "GET", "/api/dci/v3/user", F4)
    assert make_client().users.list() == [d.User(id=0, email="string", roles=("@user",))]


def test_f5_create_user(api: MockApi, make_client) -> None:
    serve(api, "POST", "/api/dci/v3/user", F5_RESPONSE)
    user = make_client().users.create(
        email="admin@example.com",
        password="pass",
        full_name="name",
        phone_number="phone",
        role="@level",
    )
    assert user.id == 0
    sent = json.loads(api.last("/api/dci/v3/user").content)
    assert sent == {**json.loads(F5_REQUEST), "role": "@level"}


@pytest.mark.parametrize(
    ("body", "status", "cls", "code", "message"),
    [
        (F6, 400, d.BadRequestError, 1106, "..."),
        (F7, 401, d.AuthenticationError, 3001, "Unauthorized"),
        (F8, 400, d.BadRequestError, 400, "Invalid parameter"),
    ],
)
def test_f6_f7_f8_errors(api: MockApi, make_client, body, status, cls, code, message) -> None:
    serve(api, "GET", "/api/dci/v3/server/1", body, status)
    with pytest.raises(cls) as info:
        make_client(token="t").servers.get(1)
    assert (info.value.error_code, info.value.message) == (code, message)


def test_f10_string_id() -> None:
    assert structure(json.loads(F10), d.ActionResult).id == 4


@pytest.mark.parametrize(
    ("roles", "expected"),
    [
        ("[@user]", ("@user",)),
        ("[@admin, @user]", ("@admin", "@user")),
        ("@admin", ("@admin",)),
        ("[]", ()),
        ("", ()),
        (["@user"], ("@user",)),
        (None, ()),
    ],
)
def test_roles_shapes(roles, expected) -> None:
    assert structure({"id": 1, "email": "a@b", "roles": roles}, d.User).roles == expected


@pytest.mark.parametrize(("task", "expected"), [("abc", "abc"), (17, "17"), (None, None)])
def test_task_shapes(task, expected) -> None:
    assert structure({"id": 1, "task": task}, d.ActionResult).task == expected


def test_unknown_enum_values_kept() -> None:
    server = structure(
        {"id": 1, "power_status": "HALF-ON", "operation": {"status": "deploying"}}, d.Server
    )
    assert server.power_status == "HALF-ON"
    assert server.operation is not None
    assert server.operation.status == "deploying"
    known = structure({"id": 1, "power_status": "off", "operation": {"status": "ok"}}, d.Server)
    assert known.power_status is PowerStatus.OFF
    assert known.operation is not None
    assert known.operation.status is OperationStatus.OK


def test_nulls_read_leniently() -> None:
    server = structure(
        {"id": 1, "name": None, "ip": None, "switch_connection": None, "operation": None},
        d.Server,
    )
    assert (server.name, server.ip, server.switch_connection) == ("", (), ())


def test_empty_action_answers(api: MockApi, make_client) -> None:
    api.on("POST", "/api/dci/v3/server/1/power_on", httpx.Response(200, content=b""))
    api.on("POST", "/api/dci/v3/server/1/power_off", httpx.Response(200, json={}))
    client = make_client()
    assert client.servers.power_on(1) == d.ActionResult()
    assert client.servers.power_off(1) == d.ActionResult()


def test_operation_states() -> None:
    assert d.Operation(status="ok").is_ok
    assert d.Operation(status="canceled").is_terminal
    assert d.Operation(status="install_failed").is_failed
    assert not d.Operation(status="running").is_terminal


def test_strict_converter_notices_unknown_fields() -> None:
    """The strict converter exists to spot fields the models do not know yet."""
    strict = make_converter(forbid_extra_keys=True)
    with pytest.raises(Exception, match="surprise"):
        strict.structure({"id": 1, "surprise": 2}, d.Location)
    assert strict.structure({"id": 1, "name": "A"}, d.Location) == d.Location(1, "A")


# ---------------------------------------------------------------- fast path = cattrs path

_any_value = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.sampled_from(["", "ok", "up", "on", "x", "7", "[@user]"]),
    st.just([]),
    st.just({}),
)


def _shape(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts where each field is absent, typical, or any odd value."""
    return st.fixed_dictionaries(
        {}, optional={k: st.one_of(v, _any_value) for k, v in fields.items()}
    )


_conn = _shape(
    {
        "id": st.integers(0, 9),
        "switch": st.integers(0, 9),
        "connection_id": st.integers(0, 9),
        "admin_status": st.sampled_from(["up", "down", "weird"]),
        "is_ipmi_connection": st.booleans(),
        "switch_name": st.text(max_size=3),
    }
)
_server = _shape(
    {
        "id": st.integers(0, 9),
        "name": st.text(max_size=3),
        "location_id": st.integers(0, 3),
        "power_status": st.sampled_from(["on", "off", "unknown", "HALF"]),
        "operation": _shape(
            {
                "id": st.integers(0, 9),
                "status": st.sampled_from(["ok", "x"]),
                "progress_info": st.lists(st.just({}), max_size=2),
            }
        ),
        "os_template": _shape({"id": st.integers(0, 3), "tags": st.lists(st.text(max_size=2))}),
        "ip": st.lists(_shape({"id": st.integers(0, 9), "name": st.text(max_size=3)}), max_size=2),
        "switch_connection": st.lists(_conn, max_size=2),
    }
)


def _outcome(fn: Any, data: Any, cls: type) -> Any:
    try:
        return ("ok", fn(data, cls))
    except Exception:
        return ("error", None)


@settings(max_examples=400)
@given(_server)
def test_fast_path_agrees_with_cattrs(data: dict[str, Any]) -> None:
    """The generated hot-path functions read exactly what plain cattrs hooks read."""
    from dci6bridge.client._converter import CONVERTER

    detailed = make_converter(detailed=True)
    assert _outcome(CONVERTER.structure, data, d.Server) == _outcome(
        detailed.structure, data, d.Server
    )


@settings(max_examples=200)
@given(
    _shape(
        {
            "id": st.integers(0, 9),
            "email": st.text(max_size=3),
            "roles": st.one_of(st.text(max_size=8), st.lists(st.text(max_size=3))),
            "server_count": st.integers(0, 3),
        }
    )
)
def test_fast_path_agrees_for_users(data: dict[str, Any]) -> None:
    from dci6bridge.client._converter import CONVERTER

    detailed = make_converter(detailed=True)
    assert _outcome(CONVERTER.structure, data, d.User) == _outcome(detailed.structure, data, d.User)


# ------------------------------------------------- objects built by the generated functions


def _walk(obj: Any) -> list[Any]:
    """``obj`` and every model nested in it."""
    found = [obj]
    for f in attrs.fields(type(obj)):
        value = getattr(obj, f.name)
        for item in value if isinstance(value, tuple) else (value,):
            if attrs.has(type(item)):
                found += _walk(item)
    return found


def test_fast_path_builds_real_frozen_models() -> None:
    """Objects filled through the private unfrozen twin end up as the model class itself:
    frozen, equal and hashing like constructor-built ones, picklable."""
    server = structure(json.loads(F2)["list"][0], d.Server)
    objects = _walk(server)
    assert {type(o) for o in objects} == {
        d.Server,
        d.Operation,
        OsTemplateRef,
        d.ServerIp,
        d.SwitchConnection,
    }
    for obj in objects:
        cls = type(obj)
        rebuilt = cls(**{f.name: getattr(obj, f.name) for f in attrs.fields(cls)})
        assert obj == rebuilt
        assert rebuilt == obj
        assert obj != attrs.evolve(rebuilt, id=-1)
        assert repr(obj) == repr(rebuilt)
        assert pickle.loads(pickle.dumps(obj)) == obj
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            obj.id = 99  # type: ignore[misc]
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            del obj.id  # type: ignore[misc]
    conn = server.switch_connection[0]
    assert hash(d.SwitchConnection(conn.id, conn.switch, conn.connection_id)) == hash(
        structure(
            {"id": conn.id, "switch": conn.switch, "connection_id": conn.connection_id},
            d.SwitchConnection,
        )
    )


def test_failure_half_way_leaves_no_half_built_object() -> None:
    """A bad nested value after several good fields is reported, naming the field."""
    data = {"id": 1, "name": "a", "switch_connection": [{"id": 1, "switch": 2}]}
    with pytest.raises(d.ResponseValidationError) as info:
        structure(data, d.Server)
    assert "switch_connection" in info.value.field


def test_every_model_takes_the_twin_path() -> None:
    """The models have no validators, converters or post-init hooks, so all of them get
    the cheap build; a model that gained one would silently fall back to ``cls(...)``."""
    from dci6bridge.client import models
    from dci6bridge.client._structgen import _filler

    for name in models.__all__:
        cls = getattr(models, name)
        if attrs.has(cls):
            assert _filler(cls) is not None, name


def test_classes_with_init_logic_are_built_by_their_init() -> None:
    """Validators, converters and ``__attrs_post_init__`` still run: such classes are
    built by calling the class, never filled slot by slot."""
    from dci6bridge.client._structgen import _filler

    @attrs.frozen
    class Validated:
        n: int = attrs.field(validator=attrs.validators.gt(0))

    @attrs.frozen
    class Converted:
        n: int = attrs.field(converter=abs)

    @attrs.frozen
    class PostInit:
        n: int

        def __attrs_post_init__(self) -> None:
            if self.n == 13:
                raise ValueError("unlucky")

    conv = make_converter()
    for cls in (Validated, Converted, PostInit):
        assert _filler(cls) is None
    with pytest.raises(ValueError):
        conv.structure({"n": 0}, Validated)
    assert conv.structure({"n": -4}, Converted) == Converted(4)
    with pytest.raises(ValueError, match="unlucky"):
        conv.structure({"n": 13}, PostInit)
    assert type(conv.structure({"n": 2}, PostInit)) is PostInit
