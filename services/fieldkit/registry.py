"""Service registration: each service declares itself once, as a ``ServiceSpec``.

Services are found through the ``fieldkit.services`` entry-point group in ``pyproject.toml``.
The runner, the broker's ACL and the per-service credentials are all derived from the
specs, so adding a service is one entry point and one module — never a list edited in
five places.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fieldkit.runner import ServiceContext

ENTRY_POINT_GROUP = "fieldkit.services"
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


class RegistryError(Exception):
    """A service spec is malformed or missing."""


@dataclass(frozen=True)
class ServiceSpec:
    """What a service is, what it may say and hear on the bus, and how to start it."""

    name: str
    summary: str
    # What the service does when it starts: a callable, or "module:function" so the spec is a
    # leaf (reading it loads nothing of the service: the supervisor, the ACL and the wipe's
    # list of holders read every spec, and a process should hold only its own service).
    setup: Callable[[ServiceContext], None] | str
    roles: frozenset[str] = frozenset({"tablet"})
    # Services this one may send requests to (topic ``<name>/req/<target>/<op>``).
    requests: tuple[str, ...] = ()
    # Extra topic filters it may read, e.g. another service's events ``kiosk/evt/#``.
    listens: tuple[str, ...] = ()
    # How the supervisor starts it, given the config path (default: `runner.service_command`).
    # The kiosk uses this to run under gunicorn, which then calls ``setup`` in its worker.
    command: Callable[[Path], list[str]] | None = None
    # Holds applicant data in memory: must answer the wipe's forget handshake (fieldkit.erasure).
    holds_personal_data: bool = False

    def start(self, ctx: ServiceContext) -> None:
        """Run ``setup``, importing it first when the spec names it."""
        setup = self.setup
        if isinstance(setup, str):
            module, _, attribute = setup.partition(":")
            try:
                setup = getattr(importlib.import_module(module), attribute)
            except (ImportError, AttributeError) as exc:
                raise RegistryError(f"service {self.name}: no setup {self.setup}: {exc}") from None
        setup(ctx)

    def __post_init__(self) -> None:
        if isinstance(self.setup, str) and not re.fullmatch(r"[\w.]+:\w+", self.setup):
            raise RegistryError(f"service {self.name}: setup {self.setup!r} is not module:function")
        if not _NAME.match(self.name):
            raise RegistryError(f"service name {self.name!r} must match {_NAME.pattern}")
        for target in self.requests:
            if not _NAME.match(target):
                raise RegistryError(f"service {self.name}: request target {target!r} is invalid")


@dataclass(frozen=True)
class Identity:
    """One MQTT identity on the local broker and what its ACL allows."""

    name: str
    writes: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
    description: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def topic_rights(spec: ServiceSpec) -> Identity:
    """Derive a service's ACL: it publishes only under its own name and ``health/<name>``."""
    n = spec.name
    writes = [f"health/{n}", f"{n}/error", f"{n}/evt/#", f"{n}/rep/#"]
    writes += [f"{n}/req/{target}/#" for target in spec.requests]
    # The watchdog heartbeat pings the service's own bus (fieldkit.watchdog).
    writes.append(f"{n}/req/{n}/ping")
    reads = [f"+/req/{n}/#", f"+/rep/{n}", *spec.listens]
    if spec.holds_personal_data:
        reads.append("wipe/evt/session/+/forget")
    return Identity(name=n, writes=tuple(writes), reads=tuple(reads), description=spec.summary)


# Identities that are not services: the operator CLI reads liveness only; the compliance
# auditor reads everything (to prove no retained message carries personal data) and writes nothing.
CTL = Identity(name="ctl", reads=("health/#",), description="fieldkit status")
AUDIT = Identity(name="audit", reads=("#",), description="compliance run: read-only")


def load_specs(names: Iterable[str] | None = None) -> list[ServiceSpec]:
    """Every registered service, or the named ones in that order."""
    found: dict[str, ServiceSpec] = {}
    wanted = None if names is None else set(names)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if wanted is not None and ep.name not in wanted:
            continue  # a spec is loaded only when asked for
        spec = ep.load()
        if not isinstance(spec, ServiceSpec):
            raise RegistryError(f"entry point {ep.name} does not point at a ServiceSpec")
        if spec.name != ep.name:
            raise RegistryError(f"entry point {ep.name} names service {spec.name}")
        found[spec.name] = spec
    if names is None:
        return sorted(found.values(), key=lambda s: s.name)
    missing = [n for n in names if n not in found]
    if missing:
        raise RegistryError(f"no registered service named {', '.join(missing)}")
    return [found[n] for n in names]


def specs_for_role(role: str, names: Iterable[str] | None = None) -> list[ServiceSpec]:
    specs = load_specs(names)
    wrong = [s.name for s in specs if role not in s.roles]
    if names is not None and wrong:
        raise RegistryError(f"services {', '.join(wrong)} do not run on a {role}")
    return [s for s in specs if role in s.roles]


def holders(specs: Iterable[ServiceSpec]) -> list[str]:
    """The services that must answer a session's forget handshake."""
    return sorted(s.name for s in specs if s.holds_personal_data)


def identities_for(specs: Iterable[ServiceSpec]) -> list[Identity]:
    return [topic_rights(s) for s in specs] + [CTL, AUDIT]
