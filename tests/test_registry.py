"""The runtime registry: runtimes found by name in servers/<package>/runtime.py, their options,
and whether they can start here (servers/registry.py)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from servers import registry


def test_the_runtimes_of_this_repository_are_found_by_name():
    reg = registry.discover()
    assert {"sim", "llamacpp", "llamacpp-python", "pytorch"} <= set(reg)
    assert reg["llamacpp"].module == "servers.llamacpp.runtime"
    assert registry.create("pytorch", {"threads": 2}).threads == 2
    assert registry.option_names(reg["llamacpp"].factory) == {"binary", "ctx_per_slot", "threads"}


def test_an_unknown_runtime_says_which_are_known():
    with pytest.raises(registry.UnknownRuntime, match=r"'nope' is not installed here.*sim"):
        registry.create("nope")


def test_check_options_names_the_options_a_runtime_does_not_take():
    assert registry.check_options("pytorch", {"threads": 1, "thread": 1}) == ["thread"]
    assert registry.check_options("not-a-runtime", {"x": 1}) == []  # checked when it exists


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch) -> Path:
    """A package ``fakeservers`` with three runtime folders: a RUNTIMES table, a plain class,
    and one whose runtime.py fails to import."""
    pkg = tmp_path / "fakeservers"
    for sub, code in {
        "alpha": """
            class _A:
                name = "alpha"
                def __init__(self, speed=1): self.speed = speed
                def command(self, s, port): return []
                def env(self, s): return {}
                def model_name(self, s): return "m"
                def version(self): return {"unavailable": "no alpha binary here"}
            RUNTIMES = {"alpha": _A, "alpha-fast": lambda **kw: _A(speed=9, **kw)}
        """,
        "beta": """
            from dataclasses import dataclass
            @dataclass
            class BetaRuntime:
                knob: int = 3
                name: str = "beta"
                def command(self, s, port): return []
                def env(self, s): return {}
                def model_name(self, s): return "m"
                def version(self): return {"version": "1"}
                def available(self): return (self.knob > 0, "knob must be positive")
        """,
        "gamma": "import a_module_that_is_not_installed\n",
    }.items():
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
        (pkg / sub / "runtime.py").write_text(textwrap.dedent(code))
    (pkg / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield pkg
    for name in [m for m in sys.modules if m.startswith("fakeservers")]:
        del sys.modules[name]


def test_a_new_runtime_folder_registers_itself_without_changes_elsewhere(plugin_dir):
    reg = registry.discover(plugin_dir, "fakeservers")
    assert set(reg) == {"alpha", "alpha-fast", "beta", "gamma"}
    assert reg["alpha-fast"].factory().speed == 9
    beta = reg["beta"].factory(knob=5)
    assert beta.knob == 5 and registry.availability(beta) == (True, "")
    assert registry.availability(reg["beta"].factory(knob=0)) == (False, "knob must be positive")
    assert registry.availability(reg["alpha"].factory()) == (False, "no alpha binary here")


def test_a_runtime_that_does_not_import_is_listed_with_the_import_error(plugin_dir):
    g = registry.discover(plugin_dir, "fakeservers")["gamma"]
    assert g.factory is None
    assert "ModuleNotFoundError" in g.broken and "a_module_that_is_not_installed" in g.broken
