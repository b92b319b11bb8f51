"""A found case as a Python file: a ``Scenario(...)`` literal ready to paste into ``harness/scenarios/``, with the
seed and implementation it failed with, and the command that replays it.

Written from the dataclasses themselves (only fields that differ from their defaults, nemeses by class name with
their imports), so what is written is what ran; :func:`load` executes the file back into the same objects.
"""

from __future__ import annotations

import dataclasses
import runpy
from pathlib import Path
from typing import Any

from harness.scenario import Scenario


@dataclasses.dataclass(frozen=True)
class Reproducer:
    scenario: Scenario
    seed: int
    impl: str


def literal(value: Any, imports: dict[str, str]) -> str:
    """Python source for ``value``; every class it names is added to ``imports`` (name -> module)."""
    if isinstance(value, type):
        imports[value.__name__] = value.__module__
        return value.__name__
    if dataclasses.is_dataclass(value):
        cls = type(value)
        imports[cls.__name__] = cls.__module__
        args = [f"{f.name}={literal(getattr(value, f.name), imports)}" for f in dataclasses.fields(value)
                if f.init and not _is_default(f, getattr(value, f.name))]
        return f"{cls.__name__}({', '.join(args)})"
    if isinstance(value, list):
        return "[" + ", ".join(literal(v, imports) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + "".join(f"{literal(v, imports)}, " for v in value).rstrip(" ") + ")"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(k, imports)}: {literal(v, imports)}" for k, v in value.items()) + "}"
    if value is None or isinstance(value, bool | int | float | str):
        return repr(value)
    raise TypeError(f"no literal for {type(value).__name__}: {value!r}")


def _is_default(f: dataclasses.Field[Any], value: Any) -> bool:
    if f.default is not dataclasses.MISSING:
        return bool(value == f.default)
    if f.default_factory is not dataclasses.MISSING:
        return bool(value == f.default_factory())
    return False


def source(rep: Reproducer, replay: str) -> str:
    """The reproducer file's text: imports, ``SCENARIO``, ``SEED``, ``IMPL``."""
    imports: dict[str, str] = {}
    body = literal(rep.scenario, imports)
    lines = ['"""A failing case found by outbox-harness explore. Replay it with:', "", f"    {replay}", "",
             "Paste SCENARIO into a module of harness/scenarios/ (renamed) to keep it in the suite.", '"""', "",
             *(f"from {module} import {', '.join(sorted(n for n, m in imports.items() if m == module))}"
               for module in sorted(set(imports.values()))),
             "", f"SEED = {rep.seed!r}", f"IMPL = {rep.impl!r}", "", f"SCENARIO = {body}", ""]
    return "\n".join(lines)


def write(path: Path, rep: Reproducer, replay: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source(rep, replay), encoding="utf-8")
    return path


class NotAReproducer(ValueError):
    """The file does not define SCENARIO (a Scenario), SEED and IMPL."""


def load(path: Path) -> Reproducer:
    try:
        ns = runpy.run_path(str(path))
    except (OSError, SyntaxError, ImportError, NameError) as exc:
        raise NotAReproducer(f"{path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(ns.get("SCENARIO"), Scenario) or not isinstance(ns.get("SEED"), int) \
            or not isinstance(ns.get("IMPL"), str):
        raise NotAReproducer(f"{path}: not a reproducer (it must define SCENARIO, SEED and IMPL)")
    return Reproducer(ns["SCENARIO"], ns["SEED"], ns["IMPL"])
