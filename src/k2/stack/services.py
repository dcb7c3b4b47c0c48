"""The local services by name. Modules are imported on demand, so `k2 --help` stays instant
and a service whose module is not there (yet) is simply not offered."""

from __future__ import annotations

import importlib
import importlib.util

from k2.stack.base import Service

# name -> (module, class). The order is the default start order and the order of `status`.
SERVICES: dict[str, tuple[str, str]] = {
    "kafka": ("k2.stack.kafka", "KafkaService"),
    "registry": ("k2.stack.registry", "RegistryService"),
    "catalog": ("k2.stack.catalog", "CatalogService"),
    "kube": ("k2.stack.kube", "KubeService"),
}

# What `k2 stack up` starts without --services (kube is opt-in: it is a test tool).
DEFAULT_SERVICES: tuple[str, ...] = ("kafka", "registry", "catalog")


def available() -> list[str]:
    """Names of the services whose module exists."""
    return [name for name, (module, _) in SERVICES.items() if _module_exists(module)]


def _module_exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def get(name: str) -> Service:
    """A new instance of the service called `name` (KeyError if unknown or not available)."""
    if name not in SERVICES or not _module_exists(SERVICES[name][0]):
        raise KeyError(f"unknown service {name!r} (available: {', '.join(available())})")
    module, cls = SERVICES[name]
    service = getattr(importlib.import_module(module), cls)()
    if not isinstance(service, Service):
        raise TypeError(f"{module}.{cls} is not a k2.stack.base.Service")
    return service
