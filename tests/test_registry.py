"""Tests for mpipipe.platform.registry: load_platform() specs and errors, choose() and auto-detection."""
from __future__ import annotations

import itertools
import textwrap

import pytest

from mpipipe.config import JobConfig
from mpipipe.errors import PlatformError
from mpipipe.platform import registry
from mpipipe.platform.base import Platform
from mpipipe.platform.local import LocalPlatform
from mpipipe.platform.mpi import WORLD_MARKERS, MpiPlatform

_counter = itertools.count()


@pytest.fixture
def make_module(tmp_path, monkeypatch):
    """Write a module with a name no other test uses into tmp_path (on sys.path); return its name."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def make(source: str, stem: str = "plat") -> str:
        name = f"_mpipipe_test_{stem}_{next(_counter)}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        return name

    return make


ONE_OWN_CLASS = """
    from mpipipe.platform.base import Platform
    from mpipipe.platform.local import LocalPlatform   # imported: must not count

    class MyPlatform(Platform):
        name = "mine"

    class NotAPlatform:
        pass
"""


# --- built-ins ---------------------------------------------------------------------------------------


def test_builtin_names():
    assert registry.load_platform("local") is LocalPlatform
    assert registry.load_platform("mpi") is MpiPlatform
    assert registry.load_platform("  mpi  ") is MpiPlatform


def test_builtin_modules_by_path():
    assert registry.load_platform("mpipipe.platform.local:LocalPlatform") is LocalPlatform
    assert registry.load_platform("mpipipe.platform.mpi.MpiPlatform") is MpiPlatform
    # mpi.py imports Platform and helpers from local.py, but defines only MpiPlatform itself
    assert registry.load_platform("mpipipe.platform.mpi") is MpiPlatform


# --- user modules ------------------------------------------------------------------------------------


def test_colon_spec(make_module):
    mod = make_module(ONE_OWN_CLASS)
    cls = registry.load_platform(f"{mod}:MyPlatform")
    assert issubclass(cls, Platform) and cls.__name__ == "MyPlatform" and cls.__module__ == mod


def test_colon_spec_may_name_an_imported_class(make_module):
    mod = make_module(ONE_OWN_CLASS)
    assert registry.load_platform(f"{mod}:LocalPlatform") is LocalPlatform


def test_dotted_spec(make_module):
    mod = make_module(ONE_OWN_CLASS)
    cls = registry.load_platform(f"{mod}.MyPlatform")
    assert cls.__name__ == "MyPlatform" and cls.__module__ == mod


def test_bare_module_picks_its_one_own_subclass(make_module):
    mod = make_module(ONE_OWN_CLASS)
    cls = registry.load_platform(mod)
    assert cls.__name__ == "MyPlatform" and cls.__module__ == mod


def test_bare_module_counts_subclasses_of_subclasses(make_module):
    mod = make_module("""
        from mpipipe.platform.local import LocalPlatform

        class NicePlatform(LocalPlatform):
            def executor_command(self):
                return ["nice", "-n", "10"]
    """)
    cls = registry.load_platform(mod)
    assert cls.__name__ == "NicePlatform" and issubclass(cls, LocalPlatform)


# --- errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [
    "_mpipipe_no_such_module_xyz",
    "_mpipipe_no_such_module_xyz:Cls",
    "_mpipipe_no_such_pkg_xyz.mod.Cls",
])
def test_missing_module(spec):
    with pytest.raises(PlatformError) as info:
        registry.load_platform(spec)
    assert "_mpipipe_no_such" in str(info.value)
    assert "local" in str(info.value) and "mpi" in str(info.value)  # lists the built-ins


@pytest.mark.parametrize("sep", [":", "."])
def test_missing_attribute(make_module, sep):
    mod = make_module(ONE_OWN_CLASS)
    with pytest.raises(PlatformError, match="has no attribute 'Missing'"):
        registry.load_platform(f"{mod}{sep}Missing")


@pytest.mark.parametrize("attr", ["NotAPlatform", "VALUE", "helper"])
def test_not_a_platform(make_module, attr):
    mod = make_module(ONE_OWN_CLASS + """
    VALUE = 3

    def helper():
        pass
""")
    for spec in (f"{mod}:{attr}", f"{mod}.{attr}"):
        with pytest.raises(PlatformError, match="not a subclass of mpipipe.Platform"):
            registry.load_platform(spec)


def test_the_base_class_itself(make_module):
    mod = make_module(ONE_OWN_CLASS)
    for spec in ("mpipipe.platform.base:Platform", "mpipipe.platform.base.Platform", f"{mod}:Platform"):
        with pytest.raises(PlatformError, match="abstract base class"):
            registry.load_platform(spec)


def test_bare_module_with_two_own_subclasses(make_module):
    mod = make_module("""
        from mpipipe.platform.base import Platform

        class First(Platform):
            pass

        class Second(Platform):
            pass
    """)
    with pytest.raises(PlatformError) as info:
        registry.load_platform(mod)
    message = str(info.value)
    assert "exactly one" in message
    assert "First" in message and "Second" in message
    assert f"{mod}:ClassName" in message  # says how to name one
    assert registry.load_platform(f"{mod}:Second").__name__ == "Second"


def test_bare_module_with_no_own_subclass(make_module):
    mod = make_module("""
        from mpipipe.platform.base import Platform
        from mpipipe.platform.mpi import MpiPlatform

        class Helper:
            pass
    """)
    with pytest.raises(PlatformError, match="found none"):
        registry.load_platform(mod)


# --- choose() and detection --------------------------------------------------------------------------


@pytest.fixture
def no_mpi_env(monkeypatch):
    for var in WORLD_MARKERS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("SP_PLATFORM", raising=False)
    return monkeypatch


def test_choose_uses_config_platform_even_inside_mpi(no_mpi_env):
    no_mpi_env.setenv("PMI_SIZE", "2")
    cls, why = registry.choose(JobConfig(platform="local"))
    assert cls is LocalPlatform
    assert "'local'" in why and "auto-detected" not in why


def test_choose_names_sp_platform_as_the_source(no_mpi_env):
    no_mpi_env.setenv("SP_PLATFORM", "mpi")
    cls, why = registry.choose(JobConfig(platform="mpi"))
    assert cls is MpiPlatform
    assert "SP_PLATFORM" in why


def test_choose_user_platform(no_mpi_env, make_module):
    mod = make_module(ONE_OWN_CLASS)
    cls, _ = registry.choose(JobConfig(platform=f"{mod}:MyPlatform"))
    assert cls.__name__ == "MyPlatform"


def test_choose_bad_platform_raises(no_mpi_env):
    with pytest.raises(PlatformError, match="unknown platform 'nosuchplatformxyz'"):
        registry.choose(JobConfig(platform="nosuchplatformxyz"))


def test_auto_detects_mpi_from_launcher_variable(no_mpi_env):
    no_mpi_env.setenv("PMI_SIZE", "2")
    cls, why = registry.choose(JobConfig())
    assert cls is MpiPlatform
    assert why.startswith("auto-detected") and "MPI" in why
    assert registry.detect()[0] == "mpi"


@pytest.mark.parametrize("var", ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPIPIPE_WORLD_SIZE"])
def test_auto_detects_mpi_from_other_markers(no_mpi_env, var):
    no_mpi_env.setenv(var, "1")
    assert registry.choose(JobConfig())[0] is MpiPlatform


def test_auto_detects_local_without_mpi_markers(no_mpi_env):
    cls, why = registry.choose(JobConfig())
    assert cls is LocalPlatform
    assert why.startswith("auto-detected")
    assert registry.detect()[0] == "local"
