"""Real HTTP: serve() from another thread and another process, the control API."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import closing

import httpx
import pytest

from dci6bridge.errors import ConfigError
from dci6bridge.testing import FakeDCImanager, Faults, ManualClock, SimulatorControl

from .conftest import login, ok


def _client(url: str) -> httpx.Client:
    return httpx.Client(base_url=f"{url}/api/", timeout=5.0)


def test_served_simulator_answers_other_threads() -> None:
    fake = FakeDCImanager.with_inventory(locations=1, servers_per_location=8)
    results: list[int] = []
    errors: list[BaseException] = []

    def worker(n: int, url: str) -> None:
        try:
            with closing(_client(url)) as http:
                login(http, fake.admin_email, fake.admin_password)
                uid = ok(
                    http.post("dci/v3/user", json={"email": f"u{n}@example.com", "password": "pw"})
                )["id"]
                ok(http.post(f"dci/v3/server/{n}/owner", json={"owner": uid}))
                results.append(n)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    with fake.serve() as url:
        assert url.startswith("http://127.0.0.1:")
        threads = [threading.Thread(target=worker, args=(n, url)) for n in range(1, 9)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    assert errors == []
    assert sorted(results) == list(range(1, 9))
    state = fake.state
    assert all(state.servers[n].owner_email == f"u{n}@example.com" for n in range(1, 9))
    assert state.count("servers.set_owner", 200) == 8


def test_served_clock_follows_real_time_and_still_advances() -> None:
    fake = FakeDCImanager.with_inventory(locations=1, servers_per_location=1, install_duration=0.05)
    clock = fake.clock
    assert isinstance(clock, ManualClock)
    start = clock.now()
    with fake.serve() as url, closing(_client(url)) as http:
        login(http, fake.admin_email, fake.admin_password)
        ok(http.post("dci/v3/server/1/reinstall", json={"os_template": 1, "password": "pw"}))
        deadline = time.monotonic() + 5
        while ok(http.get("dci/v3/server/1"))["operation"]["status"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        fake.advance(100)
    stopped = clock.now()
    assert stopped - start >= 100.05
    time.sleep(0.01)
    assert clock.now() == stopped  # manual again once serving ends


def test_a_given_clock_is_kept_when_served() -> None:
    clock = ManualClock(start=0)
    fake = FakeDCImanager.with_inventory(
        locations=1, servers_per_location=1, clock=clock, install_duration=10
    )
    with fake.serve() as url, closing(_client(url)) as http:
        login(http, fake.admin_email, fake.admin_password)
        ok(http.post("dci/v3/server/1/reinstall", json={"os_template": 1, "password": "pw"}))
        time.sleep(0.02)
        assert ok(http.get("dci/v3/server/1"))["operation"]["status"] == "running"
        clock.advance(10)
        assert ok(http.get("dci/v3/server/1"))["operation"]["status"] == "ok"


def test_lost_response_over_http_closes_the_socket() -> None:
    fake = FakeDCImanager.with_inventory(locations=1, servers_per_location=2)
    with fake.serve() as url, closing(_client(url)) as http:
        login(http, fake.admin_email, fake.admin_password)
        fake.set_faults(lost_response_rate=1.0, lost_response_routes={"servers.set_owner"})
        uid = fake.add_user("jane@example.com")
        with pytest.raises(httpx.RemoteProtocolError):
            http.post("dci/v3/server/1/owner", json={"owner": uid})
        assert fake.state.servers[1].owner_email == "jane@example.com"
        ok(http.get("dci/v3/server/1"))  # the next request gets a fresh connection


def test_latency_is_slept_when_served() -> None:
    slept: list[float] = []
    fake = FakeDCImanager.with_inventory(
        locations=1, servers_per_location=1, faults=Faults(latency_ms=(2, 4)), sleep=slept.append
    )
    with fake.serve() as url, closing(_client(url)) as http:
        login(http, fake.admin_email, fake.admin_password)
        ok(http.get("dci/v3/server/1"))
    assert len(slept) == 2
    assert all(0.002 <= s <= 0.004 for s in slept)


def test_control_api() -> None:
    fake = FakeDCImanager.with_inventory(locations=1, servers_per_location=2, install_duration=60)
    with fake.serve() as url, SimulatorControl(url) as control, closing(_client(url)) as http:
        control.wait_ready()
        login(http, fake.admin_email, fake.admin_password)
        faults = control.set_faults(unavailable_rate=0.5, lost_response_routes=["users.create"])
        assert faults == fake.faults
        assert faults.lost_response_routes == frozenset({"users.create"})
        assert control.faults() == faults
        control.set_faults(unavailable_rate=0.0)
        control.fail_next(1)
        assert http.get("dci/v3/server/1").status_code == 503
        ok(http.post("dci/v3/server/1/reinstall", json={"os_template": 1, "password": "pw"}))
        before = control.state()
        assert before.servers[1].operation_status == "running"
        control.advance(60)
        after = control.state()
        assert after.servers[1].operation_status == "ok"
        assert after.installs[0].result == "ok"
        assert after.count("servers.get", 503) == 1
        assert after.servers == fake.state.servers
        assert control.expire_tokens() == 1
        assert http.get("dci/v3/server/1").status_code == 401
        with pytest.raises(ConfigError, match="colour"):
            control.set_faults(colour="red")
        with pytest.raises(ConfigError, match="unavailable_rate"):
            control.set_faults(unavailable_rate=2)
        with pytest.raises(ConfigError, match="seconds"):
            control._call("POST", "advance", {"seconds": "soon"})
        assert httpx.get(f"{url}/__simulator__/nothing").status_code == 404


SUBPROCESS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import httpx
    from dci6bridge.testing import SimulatorControl

    url, n = sys.argv[1], int(sys.argv[2])
    http = httpx.Client(base_url=url + "/api/")
    token = http.post("auth/v4/public/token",
                      json={"email": "admin@example.com",
                            "password": "simulator-admin-password"}).json()["token"]
    http.headers["x-xsrf-token"] = token
    user = {"email": f"p{n}@example.com", "password": "pw"}
    uid = http.post("dci/v3/user", json=user).json()["id"]
    r = http.post(f"dci/v3/server/{n}/owner", json={"owner": uid})
    state = SimulatorControl(url).state()
    print(json.dumps({"status": r.status_code, "owner": state.servers[n].owner_email}))
    """
)


def test_served_simulator_is_shared_by_other_processes() -> None:
    fake = FakeDCImanager.with_inventory(locations=1, servers_per_location=4)
    with fake.serve() as url:
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", SUBPROCESS_SCRIPT, url, str(n)],
                stdout=subprocess.PIPE,
                text=True,
            )
            for n in (1, 2)
        ]
        outputs = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert outputs == [
        {"status": 200, "owner": "p1@example.com"},
        {"status": 200, "owner": "p2@example.com"},
    ]
    assert {u.email for u in fake.state.users.values()} >= {"p1@example.com", "p2@example.com"}
