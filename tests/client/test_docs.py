"""The client's doc pages agree with the code: the route table page lists exactly the
routes of ``ROUTES`` with their methods, paths and evidence levels."""

from __future__ import annotations

import re
from pathlib import Path

from dci6bridge.client._routes import ROUTES

DOCS = Path(__file__).resolve().parents[2] / "docs"
ROW = re.compile(r"^\| `([\w.]+)` \| (GET|POST|DELETE) \| `/api/([^`]+)` \| ([^|]+?) \|", re.M)


def test_routes_page_matches_the_route_table() -> None:
    text = (DOCS / "routes.md").read_text()
    table = text[text.index("## Table") : text.index("## Request bodies")]
    documented = {m[0]: (m[1], m[2], m[3].strip()) for m in ROW.findall(table)}
    actual = {r.name: (r.method, r.path, r.evidence.value) for r in ROUTES.values()}
    assert documented == actual


def test_client_guide_names_every_resource_method() -> None:
    import dci6bridge as d

    guide = (DOCS / "client.md").read_text()
    for namespace in ("servers", "users", "locations", "os_templates", "ips", "switches"):
        cls = type(getattr(d.Client("https://x.test", token="t"), namespace))
        for name in dir(cls):
            if not name.startswith("_"):
                assert f"`{name}(" in guide or f" {name}(" in guide, f"{namespace}.{name}"


def test_async_twins_have_the_same_methods() -> None:
    import inspect

    import dci6bridge as d

    sync = d.Client("https://x.test", token="t")
    asyn = d.AsyncClient("https://x.test", token="t")
    for namespace in ("servers", "users", "locations", "os_templates", "ips", "switches"):
        s, a = type(getattr(sync, namespace)), type(getattr(asyn, namespace))
        public = [n for n in dir(s) if not n.startswith("_")]
        assert public == [n for n in dir(a) if not n.startswith("_")]
        for name in public:
            sig_s = inspect.signature(getattr(s, name))
            sig_a = inspect.signature(getattr(a, name))
            assert list(sig_s.parameters) == list(sig_a.parameters), f"{namespace}.{name}"
            assert getattr(s, name).__doc__, f"{namespace}.{name} has no docstring"
    for name in ("check", "request", "whoami"):
        assert list(inspect.signature(getattr(d.Client, name)).parameters) == list(
            inspect.signature(getattr(d.AsyncClient, name)).parameters
        )
