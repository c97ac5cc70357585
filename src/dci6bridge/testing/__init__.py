"""A DCImanager 6 simulator for tests, examples, docs and your own billing test suite.

```python
from dci6bridge.testing import FakeDCImanager

fake = FakeDCImanager.with_inventory(locations=2, servers_per_location=20)
httpx.Client(base_url=fake.url, transport=fake.transport)   # in-process
with fake.serve() as url: ...                               # real HTTP on 127.0.0.1
fake.advance(600); fake.state.install_count(5)              # time and ground truth
```

It speaks every route of :data:`dci6bridge.client._routes.ROUTES` with the documented
shapes and the platform's error envelopes, follows the platform's rules (free servers,
owner conflicts, power preconditions, installs that take time, ports that leave IPMI up)
and injects seeded, deterministic faults (:class:`Faults`). See ``docs/testing.md``.
"""

from __future__ import annotations

from ._clock import Clock, ManualClock, SystemClock
from ._control import SimulatorControl
from ._fake import DEFAULT_ADMIN_PASSWORD, FakeDCImanager
from ._faults import Faults
from ._inventory import (
    Inventory,
    IpPoolSpec,
    LocationSpec,
    OsTemplateSpec,
    ServerSpec,
    UserSpec,
)
from ._state import (
    InstallRecord,
    PortState,
    RequestRecord,
    ServerState,
    SimulatorState,
    UserState,
)
from ._transport import FakeTransport

__all__ = [
    "DEFAULT_ADMIN_PASSWORD",
    "Clock",
    "FakeDCImanager",
    "FakeTransport",
    "Faults",
    "InstallRecord",
    "Inventory",
    "IpPoolSpec",
    "LocationSpec",
    "ManualClock",
    "OsTemplateSpec",
    "PortState",
    "RequestRecord",
    "ServerSpec",
    "ServerState",
    "SimulatorControl",
    "SimulatorState",
    "SystemClock",
    "UserSpec",
    "UserState",
]
