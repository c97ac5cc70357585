"""Choosing the processing module for an order: the lowest sort wins, and every other
module is told why it lost.

:func:`select_module` is pure: it reads the catalog and, if given, free-server counts the
caller fetched (for instance with ``client.servers.configurations()``); it does no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from ._validate import Problems, check_int, show
from .domain import Catalog, DataCenter, ProcessingModule, Tariff
from .errors import ConfigError, SelectionError

__all__ = ["Rejection", "Selection", "rank_key", "select_module"]


@attrs.frozen
class Rejection:
    """A module that cannot serve the order, and why (all reasons, joined by ``"; "``)."""

    module: ProcessingModule
    reason: str


@attrs.frozen
class Selection:
    """The outcome of :func:`select_module`.

    Attributes:
        tariff: the tariff the selection was made for.
        module: the chosen module, ``ranked[0]``.
        ranked: every eligible module, best first (see :func:`rank_key`).
        rejected: every other module of the catalog with its reason, in rank order.
    """

    tariff: Tariff
    module: ProcessingModule
    ranked: tuple[ProcessingModule, ...]
    rejected: tuple[Rejection, ...]

    def explain(self) -> str:
        """A few lines saying which module was chosen, the runners-up and the rejected."""
        lines = [
            f"tariff {self.tariff.name!r}: module {self.module.name!r} "
            f"(sort {self.module.sort}, data center {self.module.data_center.name!r})"
        ]
        lines += [f"  also eligible: {m.name!r} (sort {m.sort})" for m in self.ranked[1:]]
        lines += [f"  rejected: {r.module.name!r}: {r.reason}" for r in self.rejected]
        return "\n".join(lines)


def rank_key(module: ProcessingModule) -> tuple[int, int, str]:
    """The order modules are ranked in: module ``sort``, then its data center's ``sort``,
    then module name (unique in a catalog, so the order is total)."""
    return (module.sort, module.data_center.sort, module.name)


def _free_counts(
    catalog: Catalog, free_servers: Mapping[str, int | None] | None
) -> Mapping[str, int | None]:
    if free_servers is None:
        return {}
    if not isinstance(free_servers, Mapping):
        raise ConfigError(f"free_servers: {show(free_servers)} is not a mapping")
    known = {m.name for m in catalog.modules}
    p = Problems()
    for name, count in free_servers.items():
        if name not in known:
            p.add(f"free_servers[{name!r}]", "is not a module of the catalog")
        elif count is not None:
            p.add(f"free_servers[{name!r}]", check_int(count, minimum=0))
    p.raise_if_any()
    return free_servers


def _reasons(
    module: ProcessingModule,
    tariff: Tariff,
    data_center: str | None,
    free: Mapping[str, int | None],
) -> list[str]:
    reasons = []
    if not module.enabled:
        reasons.append("disabled")
    if module.name not in tariff.modules:
        reasons.append(f"not connected to tariff {tariff.name!r}")
    dc = module.data_center
    if not dc.selectable:
        reasons.append(f"data center {dc.name!r} is not managed by DCImanager 6")
    if data_center is not None and dc.name != data_center:
        reasons.append(f"in data center {dc.name!r}, not the requested {data_center!r}")
    count = free.get(module.name)
    if count == 0:
        reasons.append(f"no free server of configuration {tariff.configuration!r}")
    return reasons


def select_module(
    catalog: Catalog,
    tariff: str | Tariff,
    data_center: str | DataCenter | None = None,
    free_servers: Mapping[str, int | None] | None = None,
) -> Selection:
    """Choose the processing module that serves an order of ``tariff``.

    A module is eligible when it is enabled, connected to the tariff, its data center is
    DCImanager-6-managed with a Location ID, it is in ``data_center`` if one is requested,
    and, when ``free_servers`` (module name → free servers of the tariff's configuration)
    gives a count for it, that count is above zero. A module missing from
    ``free_servers`` (or mapped to ``None``) has an unknown count and stays eligible: the
    orchestrator finds out when it looks for a server. Eligible modules are ranked by
    :func:`rank_key`; the first is chosen (**lowest sort wins**).

    Raises:
        ConfigError: the tariff or data center is not in the catalog, the tariff names a
            module the catalog lacks, or ``free_servers`` is malformed.
        SelectionError: no module is eligible; its ``reasons`` holds ``(module name,
            reason)`` for every module of the catalog.
    """
    chosen_tariff = catalog.tariff(tariff) if isinstance(tariff, str) else tariff
    if not isinstance(chosen_tariff, Tariff):
        raise ConfigError(f"tariff: {show(tariff)} is not a tariff name or Tariff")
    for name in chosen_tariff.modules:
        catalog.module(name)  # raises ConfigError naming an unknown module
    dc_name: str | None = None
    if data_center is not None:
        dc_name = catalog.data_center(
            data_center.name if isinstance(data_center, DataCenter) else data_center
        ).name
    free = _free_counts(catalog, free_servers)

    ranked: list[ProcessingModule] = []
    rejected: list[Rejection] = []
    for module in sorted(catalog.modules, key=rank_key):
        reasons = _reasons(module, chosen_tariff, dc_name, free)
        if reasons:
            rejected.append(Rejection(module, "; ".join(reasons)))
        else:
            ranked.append(module)
    if not ranked:
        raise SelectionError(chosen_tariff.name, [(r.module.name, r.reason) for r in rejected])
    return Selection(chosen_tariff, ranked[0], tuple(ranked), tuple(rejected))
