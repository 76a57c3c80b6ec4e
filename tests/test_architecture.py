"""Imports run one way (docs/architecture.md, "Import order"): a small AST check over the tree.

- No module of `apps/` or `phonos/` imports `workers/` (workers call the apps, never back).
- Runners import from `apps/` only pure modules: none imports Django at module level.
- `apps/common` imports no domain app.
- Domain apps import only the apps before them in `APP_ORDER`. An app's entry points (its HTTP
  APIs, views, URLs, admin and management commands) sit above every app's services and
  selectors, so they may also call those of later apps, but never another app's entry points.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP_ORDER = ("common", "accounts", "billing", "webhooks", "jobs", "usage", "dashboard", "ops")
ENTRY_POINT_NAMES = {"apis.py", "views.py", "urls.py", "admin.py"}


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("apps.") and node.module.count(".") == 1:
                # `from apps.billing import services` names the module it imports.
                modules.update(f"{node.module}.{alias.name}" for alias in node.names)
            else:
                modules.add(node.module)
    return modules


def is_entry_point(path: Path) -> bool:
    return (
        path.name in ENTRY_POINT_NAMES
        or path.name.endswith(("_apis.py", "_views.py"))
        or "management" in path.parts
    )


def python_files(root: Path, folder: str) -> list[Path]:
    return sorted(path for path in (root / folder).rglob("*.py") if "migrations" not in path.parts)


def app_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "apps" else None


def entry_point_module(module: str) -> bool:
    last = module.split(".")[-1]
    return f"{last}.py" in ENTRY_POINT_NAMES or last.endswith(("_apis", "_views"))


def violations(root: Path = ROOT) -> list[str]:
    found: list[str] = []
    for path in python_files(root, "apps") + python_files(root, "phonos"):
        where = path.relative_to(root)
        own_app = where.parts[1] if where.parts[0] == "apps" else None
        for module in imported_modules(path):
            if module == "workers" or module.startswith("workers."):
                found.append(f"{where} imports {module}: apps never import workers/")
                continue
            target = app_of(module)
            if own_app is None or target is None or target == own_app:
                continue
            if own_app not in APP_ORDER or target not in APP_ORDER:
                found.append(f"{where} imports {module}: add the app to APP_ORDER")
            elif own_app == "common":
                found.append(f"{where} imports {module}: common imports no domain app")
            elif APP_ORDER.index(target) < APP_ORDER.index(own_app):
                continue
            elif is_entry_point(path) and not entry_point_module(module):
                continue
            else:
                found.append(f"{where} imports {module}: {target} comes after {own_app}")
    return sorted(set(found))


def test_imports_run_one_way() -> None:
    assert violations() == []


def top_level_imports(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.parse(path.read_text(), filename=str(path)).body:
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def impure_runner_imports(root: Path = ROOT) -> list[str]:
    """Modules of apps/ that runners import, directly or through each other, and that import
    Django (or DRF) at module level."""
    found: list[str] = []
    pending = sorted(
        {
            module
            for path in python_files(root, "workers/runners")
            for module in top_level_imports(path)
            if module.startswith("apps.")
        }
    )
    seen: set[str] = set()
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        path = root / (module.replace(".", "/") + ".py")
        if not path.exists():
            path = root / module.replace(".", "/") / "__init__.py"
        imported = top_level_imports(path) if path.exists() else set()
        found += [
            f"{module} imports {name}"
            for name in sorted(imported)
            if name.split(".")[0] in ("django", "rest_framework")
        ]
        pending += [name for name in imported if name.startswith("apps.")]
    return sorted(found)


def test_runners_import_only_pure_app_modules(tmp_path: Path) -> None:
    assert impure_runner_imports() == []
    (tmp_path / "workers/runners").mkdir(parents=True)
    (tmp_path / "apps/jobs").mkdir(parents=True)
    (tmp_path / "workers/runners/boltz.py").write_text("from apps.jobs.chemistry import x\n")
    (tmp_path / "apps/jobs/chemistry.py").write_text("from apps.jobs.models import Job\n")
    (tmp_path / "apps/jobs/models.py").write_text("from django.db import models\n")
    assert impure_runner_imports(tmp_path) == ["apps.jobs.models imports django.db"]


def test_the_check_sees_each_kind_of_violation(tmp_path: Path) -> None:
    tree = {
        "apps/common/apis.py": "from apps.accounts.models import ApiKey",
        "apps/accounts/services.py": "from apps.billing import services",
        "apps/accounts/apis.py": "from apps.jobs.selectors import job_counts\n"
        "from apps.dashboard.views import overview",
        "apps/jobs/management/commands/smoke.py": "def handle():\n    import workers.checkpoints",
        "apps/webhooks/services.py": "from apps.accounts.models import Account",
    }
    for name, text in tree.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text + "\n")
    assert violations(tmp_path) == [
        "apps/accounts/apis.py imports apps.dashboard.views: dashboard comes after accounts",
        "apps/accounts/services.py imports apps.billing.services: billing comes after accounts",
        "apps/common/apis.py imports apps.accounts.models: common imports no domain app",
        "apps/jobs/management/commands/smoke.py imports workers.checkpoints: "
        "apps never import workers/",
    ]
