"""Every import is declared: the API imports with only the core dependencies, and each runner
with only its own extra, in fresh plain virtualenvs installed from `requirements/lock.txt`.

The lock is pip-compile's output for core + every extra; its `# via` notes give each pinned
package's parents, so the closure of a dependency group is read from the lock itself (no
resolver run). Packages are installed with `--no-deps` from those pins: the resolver's index
round trips cost minutes here, a pinned install under two. An extra's venv sees the core venv's
packages through a `.pth` file, so each extra installs only what it adds.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"
# Each runner module and the extra that must be enough to import it (with core).
RUNNER_EXTRAS = {
    "workers.runners.esmfold": "esmfold",
    "workers.checkpoints": "esmfold",
    "workers.runners.alphafold2": "alphafold2",
    "workers.af2_checkpoints": "alphafold2",
    "workers.runners.vina": "vina",
    "workers.runners.diffdock": "diffdock",
}
# Worker modules that need only the core dependencies.
CORE_WORKER_MODULES = [
    "workers.runners",
    "workers.runners.base",
    "workers.runners.docking",
    "workers.runners.msa",
    "workers.runners.scrub",
    "workers.execution",
    "workers.tasks",
]
IMPORT_EVERYTHING = """
import importlib, os, pkgutil, sys
os.environ["DJANGO_SETTINGS_MODULE"] = "phonos.settings"
import django
django.setup()
for name in ("phonos", "apps"):
    package = importlib.import_module(name)
    for info in pkgutil.walk_packages(package.__path__, name + "."):
        importlib.import_module(info.name)
for name in sys.argv[1:]:
    importlib.import_module(name)
print("imported")
"""


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_entries() -> dict[str, tuple[str, set[str]]]:
    """name -> (pin, the names that require it) from pip-compile's annotated output."""
    entries: dict[str, tuple[str, set[str]]] = {}
    current = None
    for line in LOCK.read_text().splitlines():
        if pin := re.match(r"^([A-Za-z0-9][A-Za-z0-9_.\-]*)==\S+", line):
            current = normalized(pin.group(1))
            entries[current] = (pin.group(0), set())
        elif (parent := re.match(r"^\s+#\s+(?:via\s+)?([A-Za-z0-9][\w.\-]*)", line)) and current:
            if parent.group(1) != "via":
                entries[current][1].add(normalized(parent.group(1)))
    return entries


def declared(group: str) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = (
        project["dependencies"] if group == "core" else project["optional-dependencies"][group]
    )
    return {normalized(re.match(r"[A-Za-z0-9_.\-]+", req).group(0)) for req in requirements}


def closure(names: set[str], entries: dict[str, tuple[str, set[str]]]) -> set[str]:
    found = set(names)
    while added := {
        name for name, (_, parents) in entries.items() if name not in found and parents & found
    }:
        found |= added
    return found


def clean_environment() -> dict[str, str]:
    """No PYTHONPATH, no test settings, no database: only what an API node or worker starts with."""
    keep = ("PATH", "HOME", "LANG", "TMPDIR")
    return {
        name: value for name, value in os.environ.items() if name in keep or name.startswith("PIP_")
    }


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(
        command, capture_output=True, text=True, env=clean_environment(), **kwargs
    )
    assert result.returncode == 0, f"{command[:4]} failed:\n{result.stdout}\n{result.stderr}"
    return result


def venv_create(path: Path, *, pins: list[str], base: Path | None = None) -> Path:
    """A plain venv (never --system-site-packages) with exactly `pins`; `base`'s packages are
    visible through a .pth file."""
    run([sys.executable, "-m", "venv", str(path)])
    python = path / "bin" / "python"
    if base is not None:
        site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
        base_site = run([str(base), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
        (Path(site.stdout.strip()) / "phonos-base.pth").write_text(base_site.stdout)
    if pins:
        requirements = path / "pins.txt"
        requirements.write_text("\n".join(pins) + "\n")
        run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                "--no-deps",
                "--no-compile",
                "-r",
                str(requirements),
            ]
        )
    return python


@pytest.fixture(scope="module")
def entries() -> dict[str, tuple[str, set[str]]]:
    return lock_entries()


@pytest.fixture(scope="module")
def core_python(
    tmp_path_factory: pytest.TempPathFactory, entries: dict[str, tuple[str, set[str]]]
) -> Iterator[Path]:
    core = closure(declared("core"), entries)
    yield venv_create(
        tmp_path_factory.mktemp("venvs") / "core", pins=[entries[name][0] for name in core]
    )


def test_the_lock_pins_every_declared_dependency(entries) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = ["core", *project["optional-dependencies"]]
    missing = {group: declared(group) - set(entries) for group in groups}
    assert missing == {group: set() for group in groups}, "run scripts/lock"


def test_every_runner_module_names_its_extra() -> None:
    from workers.runners import MODEL_IDS

    runner_modules = {
        f"workers.runners.{path.stem}"
        for path in (ROOT / "workers" / "runners").glob("*.py")
        if path.stem != "__init__"
    }
    assert runner_modules <= set(RUNNER_EXTRAS) | set(CORE_WORKER_MODULES)
    assert {f"workers.runners.{model}" for model in MODEL_IDS} <= set(RUNNER_EXTRAS)


def test_this_environment_is_consistent() -> None:
    run([sys.executable, "-m", "pip", "check"])


@pytest.mark.slow
def test_the_api_imports_with_only_the_core_dependencies(core_python: Path) -> None:
    run([str(core_python), "-m", "pip", "check"])
    result = run([str(core_python), "-c", IMPORT_EVERYTHING, *CORE_WORKER_MODULES], cwd=ROOT)
    assert result.stdout.strip().endswith("imported")


@pytest.mark.slow
@pytest.mark.parametrize("extra", sorted(set(RUNNER_EXTRAS.values())))
def test_each_runner_imports_with_only_its_own_extra(
    extra: str, core_python: Path, entries, tmp_path: Path
) -> None:
    core = closure(declared("core"), entries)
    own = closure(core | declared(extra), entries) - core
    python = venv_create(
        tmp_path / extra, pins=[entries[name][0] for name in sorted(own)], base=core_python
    )
    run([str(python), "-m", "pip", "check"])
    modules = [module for module, needs in RUNNER_EXTRAS.items() if needs == extra]
    run(
        [
            str(python),
            "-c",
            "import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]",
            *modules,
        ],
        cwd=ROOT,
    )


def test_the_lock_files_are_tracked_and_not_ignored() -> None:
    """`npm ci` and `pip install -c` need them in every checkout."""
    locks = ["requirements/lock.txt", "package-lock.json"]
    tracked = run(["git", "ls-files", *locks], cwd=ROOT).stdout.split()
    assert sorted(tracked) == sorted(locks)
    assert (
        run(["git", "ls-files", "--cached", "--ignored", "--exclude-standard"], cwd=ROOT).stdout
        == ""
    )
