"""Parsing a 10,000-server list into models vs ``json.loads`` alone.

The payload has the documented F2 shape with realistic values: an operation, an OS
template, two IPs and three switch connections per server, plus the fields the models
ignore (hardware_info, settings, pdu_connection). Both sides start from the same bytes.
Run: ``python bench/parse_servers.py [--servers N] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from dci6bridge.client._converter import decode_json, structure_list
from dci6bridge.client.models import Server


def server(i: int) -> dict[str, Any]:
    loc = 1 + i % 3
    return {
        "operation": {
            "id": 1000 + i,
            "status": "ok" if i % 7 else "running",
            "status_info": {},
            "progress_info": [{}],
        },
        "domain": f"srv{i}.dc{loc}.example.net",
        "id": i,
        "name": f"srv-{loc}-{i:05d}",
        "location_id": loc,
        "owner_email": None if i % 3 else f"customer{i}@example.com",
        "is_new": False,
        "maintenance_mode": False,
        "power_status": "on",
        "os_template": {"id": 3, "name": "Ubuntu 22.04", "tags": ["linux", "ubuntu"]},
        "hardware_info": {"motherboard": {"model": "X11SCH-F"}, "cpu": {"count": 8}},
        "perform_info": {},
        "configuration": "E3-1230v6-64Gb-2x480SSD",
        "settings": {"efi": True},
        "state": "active",
        "state_info": "",
        "ip": [
            {
                "domain": f"srv{i}.example.net",
                "family": "ipv4",
                "gateway": "203.0.113.1",
                "id": 2 * i,
                "name": f"203.0.{i % 250}.{i % 200 + 2}",
                "network": "203.0.113.0/24",
                "status": "allocated",
                "status_info": {},
            },
            {
                "domain": "",
                "family": "ipv6",
                "gateway": "2001:db8::1",
                "id": 2 * i + 1,
                "name": f"2001:db8::{i:x}",
                "network": "2001:db8::/64",
                "status": "allocated",
                "status_info": {},
            },
        ],
        "switch_connection": [
            {
                "id": 3 * i + k,
                "switch": 1 + i % 20,
                "connection_id": 48 * (i % 20) + k,
                "description": f"sw-{i % 20}/ge-0/0/{k}",
                "admin_status": "up",
                "oper_status": "up",
                "do_not_collect_traffic": k == 0,
                "is_ipmi_connection": k == 0,
                "switch_name": f"sw-{i % 20}",
            }
            for k in range(3)
        ],
        "pdu_connection": {
            "port_id": i,
            "port_identity": f"pdu-{i % 10}:{i % 24}",
            "pdu_id": i % 10,
            "pdu_name": f"pdu-{i % 10}",
            "connection_id": i,
            "power_status": "on",
        },
    }


def payload(n: int) -> bytes:
    return json.dumps({"list": [server(i) for i in range(1, n + 1)], "size": n}).encode()


def cpu_time(fn: Callable[[], object]) -> float:
    """CPU seconds of one run of ``fn`` with the GC off (as timeit does).

    CPU time of this process, not wall time: on a shared machine other processes
    would otherwise swing each sample by tens of percent."""
    gc.collect()
    gc.disable()
    try:
        t0 = time.process_time()
        fn()
        return time.process_time() - t0
    finally:
        gc.enable()


def paired(
    base: Callable[[], object], candidate: Callable[[], object], repeat: int
) -> tuple[float, float, float]:
    """Interleaved runs: (median base, median candidate, median of per-pair ratios)."""
    bases, cands, ratios = [], [], []
    for _ in range(repeat):
        b = cpu_time(base)
        c = cpu_time(candidate)
        bases.append(b)
        cands.append(c)
        ratios.append(c / b)
    return statistics.median(bases), statistics.median(cands), statistics.median(ratios)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args(argv)
    data = payload(args.servers)
    parsed = structure_list(decode_json(data), Server)
    assert len(parsed) == args.servers
    assert parsed[-1].switch_connection[2].switch_name

    base, full, ratio = paired(
        lambda: json.loads(data), lambda: structure_list(decode_json(data), Server), args.repeat
    )
    decode_only = statistics.median(cpu_time(lambda: decode_json(data)) for _ in range(5))
    python = sys.version.split()[0]
    print(f"payload: {args.servers} servers, {len(data) / 1e6:.1f} MB (Python {python})")
    print(f"median CPU time per run ({args.repeat} interleaved pairs):")
    print(f"json.loads alone            : {base * 1000:8.1f} ms")
    print(f"decode_json (orjson) alone  : {decode_only * 1000:8.1f} ms")
    print(f"full parse into models      : {full * 1000:8.1f} ms")
    print(f"ratio full / json.loads     : {ratio:8.2f}x  (median of pair ratios; target <= 1.50x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
