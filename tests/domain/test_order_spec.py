"""Order.to_spec / Order.from_spec: the dict the orchestrator stores."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dci6bridge import ConfigError, Order

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl jane@laptop"

names = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp")),
    min_size=1,
    max_size=20,
)
labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
hostnames = (
    st.lists(labels, min_size=1, max_size=4)
    .map(".".join)
    .filter(lambda h: not h.rsplit(".", 1)[-1].isdigit())
)
emails = st.tuples(labels, labels, labels).map(lambda t: f"{t[0]}@{t[1]}.{t[2]}")
orders = st.builds(
    Order,
    service_id=names,
    tariff=names,
    os_template=names,
    customer_email=emails,
    hostname=st.none() | hostnames,
    ssh_keys=st.lists(st.just(KEY), max_size=2).map(tuple),
    recipe=st.none() | names,
    data_center=st.none() | names,
    customer_name=st.none() | names,
)


@given(orders)
def test_spec_round_trips_through_json(order: Order) -> None:
    spec = order.to_spec()
    assert json.loads(json.dumps(spec)) == spec
    assert Order.from_spec(json.loads(json.dumps(spec))) == order


def test_spec_shape() -> None:
    order = Order(
        "INV-1", "E3-64", "Debian 12", "jane@example.com", hostname="web1", ssh_keys=[KEY]
    )
    assert order.to_spec() == {
        "service_id": "INV-1",
        "tariff": "E3-64",
        "os_template": "Debian 12",
        "customer_email": "jane@example.com",
        "hostname": "web1",
        "ssh_keys": [KEY],
        "recipe": None,
        "data_center": None,
        "customer_name": None,
    }


def test_minimal_spec_uses_defaults() -> None:
    spec = {
        "service_id": "INV-2",
        "tariff": "E3-64",
        "os_template": "Debian 12",
        "customer_email": "jane@example.com",
    }
    assert Order.from_spec(spec) == Order(**spec)


@pytest.mark.parametrize(
    ("spec", "problems"),
    [
        (
            {"service_id": "A", "tariff": "T", "os_template": "D", "colour": "red"},
            ("Order.colour: unknown field", "Order.customer_email: missing"),
        ),
        (
            {"service_id": "A", "tariff": "T", "os_template": "D", "customer_email": "x"},
            ("Order.customer_email: 'x' is not an e-mail address",),
        ),
        (["INV-1"], ("Order: ['INV-1'] is not a mapping",)),
    ],
)
def test_bad_spec(spec: Any, problems: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as info:
        Order.from_spec(spec)
    assert info.value.problems == problems
