"""dci6bridge: sell dedicated servers managed by ISPsystem DCImanager 6 from Python.

Everything public is importable from here (see ``__all__``). Names are resolved lazily so
``import dci6bridge`` stays cheap and optional backends (PostgreSQL) load only when used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module that defines it (relative to this package)
_EXPORTS: dict[str, str] = {
    # errors
    **dict.fromkeys(
        (
            "APIConnectionError",
            "APIStatusError",
            "APITimeoutError",
            "AuthenticationError",
            "BadRequestError",
            "ConfigError",
            "ConflictError",
            "Dci6BridgeError",
            "InvalidRequest",
            "LeaseLost",
            "NotFoundError",
            "OperationError",
            "OperationFailedError",
            "OperationTimeoutError",
            "PermissionDeniedError",
            "ResponseValidationError",
            "SelectionError",
            "ServerError",
            "ServiceNotFound",
            "ServiceUnavailableError",
            "SimulationError",
            "SpecMismatch",
            "StaleState",
            "StoreError",
            "TaskNotFound",
        ),
        ".errors",
    ),
    "Secret": ".secret",
    # client
    "Client": ".client",
    "AsyncClient": ".client",
    "RetryPolicy": ".client",
    "Q": ".client",
    **dict.fromkeys(
        (
            "ActionResult",
            "ConfigurationCount",
            "ConnectionCheck",
            "IpPool",
            "Location",
            "Operation",
            "OperationStatus",
            "OsTemplate",
            "Page",
            "PowerStatus",
            "Server",
            "ServerIp",
            "SwitchConnection",
            "User",
        ),
        ".client.models",
    ),
    # domain and selection
    **dict.fromkeys(("Catalog", "DataCenter", "Order", "ProcessingModule", "Tariff"), ".domain"),
    **dict.fromkeys(("Rejection", "Selection", "select_module"), ".selection"),
    # stores
    **dict.fromkeys(
        (
            "DepartmentTask",
            "MemoryStore",
            "PostgresStore",
            "SQLiteStore",
            "StatusStore",
            "Transition",
            "open_store",
        ),
        ".stores",
    ),
    # orchestrator
    **dict.fromkeys(
        ("Event", "Provisioner", "Service", "ServiceState", "ServiceStatus", "Worker"),
        ".provisioning",
    ),
}

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "ActionResult",
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "Catalog",
    "Client",
    "ConfigError",
    "ConfigurationCount",
    "ConflictError",
    "ConnectionCheck",
    "DataCenter",
    "Dci6BridgeError",
    "DepartmentTask",
    "Event",
    "InvalidRequest",
    "IpPool",
    "LeaseLost",
    "Location",
    "MemoryStore",
    "NotFoundError",
    "Operation",
    "OperationError",
    "OperationFailedError",
    "OperationStatus",
    "OperationTimeoutError",
    "Order",
    "OsTemplate",
    "Page",
    "PermissionDeniedError",
    "PostgresStore",
    "PowerStatus",
    "ProcessingModule",
    "Provisioner",
    "Q",
    "Rejection",
    "ResponseValidationError",
    "RetryPolicy",
    "SQLiteStore",
    "Secret",
    "Selection",
    "SelectionError",
    "Server",
    "ServerError",
    "ServerIp",
    "Service",
    "ServiceNotFound",
    "ServiceState",
    "ServiceStatus",
    "ServiceUnavailableError",
    "SimulationError",
    "SpecMismatch",
    "StaleState",
    "StatusStore",
    "StoreError",
    "SwitchConnection",
    "Tariff",
    "TaskNotFound",
    "Transition",
    "User",
    "Worker",
    "__version__",
    "open_store",
    "select_module",
]

if TYPE_CHECKING:
    from .client import AsyncClient, Client, Q, RetryPolicy
    from .client.models import (
        ActionResult,
        ConfigurationCount,
        ConnectionCheck,
        IpPool,
        Location,
        Operation,
        OperationStatus,
        OsTemplate,
        Page,
        PowerStatus,
        Server,
        ServerIp,
        SwitchConnection,
        User,
    )
    from .domain import Catalog, DataCenter, Order, ProcessingModule, Tariff
    from .errors import (
        APIConnectionError,
        APIStatusError,
        APITimeoutError,
        AuthenticationError,
        BadRequestError,
        ConfigError,
        ConflictError,
        Dci6BridgeError,
        InvalidRequest,
        LeaseLost,
        NotFoundError,
        OperationError,
        OperationFailedError,
        OperationTimeoutError,
        PermissionDeniedError,
        ResponseValidationError,
        SelectionError,
        ServerError,
        ServiceNotFound,
        ServiceUnavailableError,
        SimulationError,
        SpecMismatch,
        StaleState,
        StoreError,
        TaskNotFound,
    )
    from .provisioning import Event, Provisioner, Service, ServiceState, ServiceStatus, Worker
    from .secret import Secret
    from .selection import Rejection, Selection, select_module
    from .stores import (
        DepartmentTask,
        MemoryStore,
        PostgresStore,
        SQLiteStore,
        StatusStore,
        Transition,
        open_store,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dci6bridge' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return __all__
