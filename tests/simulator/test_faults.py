"""Every fault, deterministic by seed."""

from __future__ import annotations

import asyncio
from contextlib import closing

import httpx
import pytest

from dci6bridge.errors import ConfigError
from dci6bridge.testing import FakeDCImanager, Faults

from .conftest import api, error_of, ok


def _small(**kwargs: object) -> FakeDCImanager:
    return FakeDCImanager.with_inventory(locations=1, servers_per_location=4, **kwargs)  # type: ignore[arg-type]


def _statuses(seed: int, faults: Faults, n: int = 40) -> list[int]:
    fake = _small(seed=seed)
    with closing(api(fake)) as http:
        fake.faults = faults
        return [http.get("dci/v3/server/1").status_code for _ in range(n)]


def test_503_with_probability_is_seeded() -> None:
    faults = Faults(unavailable_rate=0.3)
    a = _statuses(1, faults)
    assert a == _statuses(1, faults)
    assert a != _statuses(2, faults)
    assert set(a) == {200, 503}


def test_503_bursts_are_consecutive() -> None:
    statuses = _statuses(3, Faults(unavailable_rate=0.1, unavailable_burst=4), n=200)
    runs, run = [], 0
    for s in [*statuses, 200]:
        if s == 503:
            run += 1
        elif run:
            runs.append(run)
            run = 0
    assert runs
    # Each episode lasts 4 requests; episodes can touch, so runs are multiples of 4
    # (the last one may be cut short by the end of the sample).
    assert all(r % 4 == 0 for r in runs[:-1])


def test_503_body_is_the_platform_envelope(fake: FakeDCImanager, http: httpx.Client) -> None:
    fake.fail_next(2)
    err = error_of(http.get("dci/v3/server/1"), 503)
    assert err["msg"] == "Unavailable"
    r = http.post("auth/v4/public/token", json={"email": "a@b", "password": "x"})
    assert r.status_code == 503
    assert r.json()["error"] == "Unavailable"  # auth envelope on the auth service
    ok(http.get("dci/v3/server/1"))
    assert fake.state.count("servers.get", 503) == 1


def test_503_only_on_given_routes(fake: FakeDCImanager, http: httpx.Client) -> None:
    fake.set_faults(unavailable_rate=1.0, unavailable_routes={"servers.list"})
    ok(http.get("dci/v3/server/1"))
    error_of(http.get("dci/v3/server"), 503)


def test_lost_response_applies_the_effect_then_times_out(
    fake: FakeDCImanager, http: httpx.Client
) -> None:
    fake.set_faults(lost_response_rate=1.0, lost_response_routes=["users.create"])
    with pytest.raises(httpx.ReadTimeout):
        http.post("dci/v3/user", json={"email": "jane@example.com", "password": "pw"})
    assert len(fake.state.users_by_email("jane@example.com")) == 1
    with pytest.raises(httpx.ReadTimeout):
        http.post("dci/v3/user", json={"email": "jane@example.com", "password": "pw"})
    assert len(fake.state.users_by_email("jane@example.com")) == 2  # a blind retry duplicates
    ok(http.get("dci/v3/user"))  # other routes answer
    lost = [r for r in fake.state.requests if r.lost]
    assert [(r.route, r.status) for r in lost] == [("users.create", 200)] * 2


def test_lost_response_is_seeded() -> None:
    def pattern(seed: int) -> list[bool]:
        fake = _small(
            seed=seed, faults=Faults(lost_response_rate=0.5, lost_response_routes={"servers.get"})
        )
        out = []
        with closing(api(fake)) as http:
            for _ in range(30):
                try:
                    http.get("dci/v3/server/1")
                    out.append(False)
                except httpx.ReadTimeout:
                    out.append(True)
        return out

    assert pattern(5) == pattern(5)
    assert pattern(5) != pattern(6)
    assert 0 < sum(pattern(5)) < 30


def test_latency_is_drawn_from_the_range_and_slept_only_when_asked() -> None:
    slept: list[float] = []
    fake = _small(faults=Faults(latency_ms=(1, 20)), sleep=slept.append)
    with closing(api(fake)) as http:
        for _ in range(10):
            ok(http.get("dci/v3/server/1"))
        assert slept == []
        fake.set_faults(latency_in_process=True)
        for _ in range(10):
            ok(http.get("dci/v3/server/1"))
    assert len(slept) == 10
    assert all(0.001 <= s <= 0.020 for s in slept)
    assert len(set(slept)) == 10


def test_latency_in_process_async() -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    fake = _small(faults=Faults(latency_ms=5, latency_in_process=True), async_sleep=fake_sleep)

    async def main() -> int:
        async with httpx.AsyncClient(base_url=f"{fake.url}/api/", transport=fake.transport) as c:
            r = await c.post(
                "auth/v4/public/token",
                json={"email": fake.admin_email, "password": fake.admin_password},
            )
            return r.status_code

    assert asyncio.run(main()) == 201
    assert slept == [0.005]


def test_outsider_takes_the_server_first(fake: FakeDCImanager, http: httpx.Client) -> None:
    uid = fake.add_user("jane@example.com")
    fake.set_faults(outsider_rate=1.0)
    err = error_of(http.post("dci/v3/server/1/owner", json={"owner": uid}), 409)
    owner = fake.state.servers[1].owner_email
    assert owner is not None
    assert owner != "jane@example.com"
    assert err["value"]["owner_email"] == owner
    error_of(http.post("dci/v3/server/2/owner", json={"owner": uid}), 409)
    fake.set_faults(outsider_rate=0.0)
    ok(http.post("dci/v3/server/3/owner", json={"owner": uid}))
    fake.set_faults(outsider_rate=1.0)
    # Only a free server is taken: assigning again to its owner still succeeds.
    ok(http.post("dci/v3/server/3/owner", json={"owner": uid}))
    state = fake.state
    assert state.servers[3].owner_email == "jane@example.com"
    assert len({state.servers[1].owner_email, state.servers[2].owner_email}) == 2


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"unavailable_rate": 1.5}, "unavailable_rate"),
        ({"unavailable_burst": 0}, "unavailable_burst"),
        ({"latency_ms": (20, 1)}, "latency_ms"),
        ({"token_ttl": 0}, "token_ttl"),
        ({"lost_response_routes": {"servers.explode"}}, "servers.explode"),
        ({"outsider_rate": -0.1}, "outsider_rate"),
    ],
)
def test_bad_faults_are_config_errors(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        Faults(**kwargs)  # type: ignore[arg-type]


def test_set_faults_rejects_unknown_fields(fake: FakeDCImanager) -> None:
    with pytest.raises(ConfigError, match="colour"):
        fake.set_faults(colour="red")
    assert fake.faults == Faults()


def test_route_filters_tell_assign_from_release(fake: FakeDCImanager, http: httpx.Client) -> None:
    uid = fake.add_user("jane@example.com")
    fake.set_faults(unavailable_rate=1.0, unavailable_routes={"servers.release_owner"})
    ok(http.post("dci/v3/server/1/owner", json={"owner": uid}))
    error_of(http.post("dci/v3/server/1/owner", json={"owner": None}), 503)
    assert fake.state.servers[1].owner_id == uid
    # 503 comes before body checks, as on a suspended service.
    fake.set_faults(unavailable_routes=set())
    error_of(http.post("dci/v3/server/1/owner", content=b"{bad"), 503)
