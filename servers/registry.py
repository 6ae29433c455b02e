"""Runtimes by name: a registry discovered from ``servers/<package>/runtime.py``.

The experiment matrix (loadgen/matrix) names runtimes ("vllm", "llamacpp", "pytorch", "triton",
"sim") and needs, for each name, a factory that builds a ``servers.launch.Runtime`` from the
options written in the experiment file. Adding a runtime needs no change here or in the matrix:
put a ``runtime.py`` in a new ``servers/<package>/`` and either

- define ``RUNTIMES = {"name": factory, ...}`` in it (a factory is any callable taking the
  runtime's options as keyword arguments and returning a Runtime), or
- define classes with a string ``name`` and the Runtime methods (``command``, ``env``,
  ``model_name``, ``version``): each is registered under its ``name``, the class itself being
  the factory (dataclass fields are its options).

Optional methods a runtime may add, used by the matrix:
  ``available() -> (bool, reason)``  a cheap check (it must not install or build anything)
                                     that the runtime can start here;
  ``prepare() -> None``              install or build what it needs (run only when the
                                     experiment file says ``prepare = true``).
Without ``available()``, a runtime is unavailable when ``version()`` answers
``{"unavailable": reason}`` (the Runtime protocol's convention).

A ``runtime.py`` that fails to import registers its package name as unavailable, with the
import error as the cause, so a matrix skips those cells and says why instead of crashing.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SERVERS_DIR = Path(__file__).resolve().parent
RUNTIME_METHODS = ("command", "env", "model_name", "version")

Factory = Callable[..., Any]


@dataclass(frozen=True)
class Entry:
    """One registered runtime name: its factory, or why there is none."""

    name: str
    module: str
    factory: Factory | None = None
    broken: str | None = None  # the import error of a runtime.py that does not import


def _is_runtime_class(obj: Any, module: str) -> bool:
    return (inspect.isclass(obj) and obj.__module__ == module
            and isinstance(getattr(obj, "name", None), str)
            and all(callable(getattr(obj, m, None)) for m in RUNTIME_METHODS))


def discover(servers_dir: Path = SERVERS_DIR, package: str = "servers") -> dict[str, Entry]:
    """Every runtime name found under ``servers_dir/*/runtime.py`` (see the module docstring)."""
    found: dict[str, Entry] = {}
    for path in sorted(servers_dir.glob("*/runtime.py")):
        modname = f"{package}.{path.parent.name}.runtime"
        try:
            mod = importlib.import_module(modname)
        except Exception as e:  # noqa: BLE001 - any import failure makes the runtime unavailable
            found.setdefault(path.parent.name, Entry(path.parent.name, modname,
                                                     broken=f"{type(e).__name__}: {e}"))
            continue
        table = getattr(mod, "RUNTIMES", None)
        if isinstance(table, dict):
            for name, factory in table.items():
                found[str(name)] = Entry(str(name), modname, factory=factory)
            continue
        for _, obj in inspect.getmembers(mod, lambda o, m=modname: _is_runtime_class(o, m)):
            found[obj.name] = Entry(obj.name, modname, factory=obj)
    return found


class UnknownRuntime(LookupError):
    """No ``servers/*/runtime.py`` registers this name."""


_CACHE: dict[str, Entry] | None = None


def registry(refresh: bool = False) -> dict[str, Entry]:
    """The discovered registry, cached per process."""
    global _CACHE
    if _CACHE is None or refresh:
        _CACHE = discover()
    return _CACHE


def entry(name: str) -> Entry:
    reg = registry()
    if name not in reg:
        raise UnknownRuntime(
            f"runtime {name!r} is not installed here: no servers/*/runtime.py registers it "
            f"(known: {', '.join(sorted(reg)) or 'none'})")
    return reg[name]


def option_names(factory: Factory) -> set[str] | None:
    """Keyword options the factory accepts (None: it takes **kwargs, anything goes)."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return {n for n, p in sig.parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n != "name"
            and not n.startswith("_")}


def check_options(name: str, options: dict[str, Any]) -> list[str]:
    """Names in ``options`` that runtime ``name``'s factory does not accept ([] if unknown)."""
    try:
        e = entry(name)
    except UnknownRuntime:
        return []
    if e.factory is None:
        return []
    allowed = option_names(e.factory)
    return [] if allowed is None else sorted(set(options) - allowed)


def create(name: str, options: dict[str, Any] | None = None) -> Any:
    """A Runtime instance for ``name`` built with ``options`` (UnknownRuntime if none)."""
    e = entry(name)
    if e.factory is None:
        raise UnknownRuntime(f"runtime {name!r} ({e.module}) does not import here: {e.broken}")
    return e.factory(**(options or {}))


def availability(runtime: Any) -> tuple[bool, str]:
    """(True, "") if ``runtime`` can start here, else (False, why): ``available()`` if it has
    one, otherwise ``version()``'s ``unavailable`` key."""
    check = getattr(runtime, "available", None)
    try:
        if callable(check):
            ok, why = check()
            return (True, "") if ok else (False, str(why or "available() said no"))
        v = runtime.version()
    except Exception as e:  # noqa: BLE001 - a failing check means "not available", with why
        return False, f"availability check raised {type(e).__name__}: {e}"
    if isinstance(v, dict) and v.get("unavailable"):
        return False, str(v["unavailable"])
    return True, ""
