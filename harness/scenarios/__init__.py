"""The scenario catalogue: every :class:`~harness.scenario.Scenario` constant of the modules in this package.

Adding a scenario is adding one module here (or one constant to a module); ``pytest scenarios/`` and
``outbox-harness run`` pick it up by name. Modules are read in name order, constants in definition order.
"""

from __future__ import annotations

import importlib
import pkgutil

from harness.scenario import Scenario


def _collect() -> list[Scenario]:
    found: list[Scenario] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        found += [v for v in vars(module).values() if isinstance(v, Scenario)]
    names = [s.name for s in found]
    if dupes := sorted({n for n in names if names.count(n) > 1}):
        raise ValueError(f"scenario names must be unique; repeated: {dupes}")
    return found


SCENARIOS: list[Scenario] = _collect()
BY_NAME: dict[str, Scenario] = {s.name: s for s in SCENARIOS}


def by_name(name: str) -> Scenario:
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"no scenario named {name!r}; known: {', '.join(BY_NAME)}") from None
