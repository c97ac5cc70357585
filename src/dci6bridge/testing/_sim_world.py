"""The world of the deterministic simulation (:mod:`.simulation`): a catalog of two
modules on one simulated DCImanager (one per location, as two data centers served by
one DCImanager) and the orders billing opens."""

from __future__ import annotations

from dci6bridge.domain import Catalog, DataCenter, Order, ProcessingModule, Tariff

from ._fake import FakeDCImanager

__all__ = ["CONFIGURATION", "OS_TEMPLATES", "catalog", "orders"]

#: The configuration every simulated server has, and the tariff's OS templates.
CONFIGURATION = "E3-1230v6-64Gb-2x480SSD"
OS_TEMPLATES = ("Ubuntu 22.04", "Debian 12")


def catalog(fake: FakeDCImanager) -> Catalog:
    """Two data centers (one per simulator location), a module in each (the first
    sorts first), one tariff sold by both."""
    centers = [DataCenter(name=f"DC{n}", location_id=n, sort=n) for n in (1, 2)]
    modules = [
        ProcessingModule(
            name=f"dci-{dc.location_id}",
            data_center=dc,
            url=fake.url,
            username=fake.admin_email,
            password=fake.admin_password,
            department=f"Support-{dc.location_id}",
            sort=dc.sort,
        )
        for dc in centers
    ]
    tariff = Tariff(
        name="E3",
        configuration=CONFIGURATION,
        os_templates=OS_TEMPLATES,
        modules=tuple(m.name for m in modules),
    )
    return Catalog(data_centers=centers, modules=modules, tariffs=[tariff])


def orders(count: int, shared_customer_every: int) -> list[Order]:
    """``count`` orders of the tariff; every ``shared_customer_every``-th reuses the
    previous order's customer (``0``: one customer per order)."""
    every = shared_customer_every

    def customer(i: int) -> int:
        # one new customer per order, less one for each reuse so far
        return i + 1 - (i // every if every else 0)

    return [
        Order(
            service_id=f"SIM-{i:03d}",
            tariff="E3",
            os_template=OS_TEMPLATES[0],
            customer_email=f"customer{customer(i)}@example.com",
        )
        for i in range(count)
    ]
