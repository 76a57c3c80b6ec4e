"""The model registry is the one definition of every model: /v1/models, validation and the
OpenAPI document read it, and no runner keeps rules of its own."""

import ast
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from apps.jobs.models import Job
from apps.jobs.registry import MODELS
from tests.api.test_openapi import openapi_document
from tests.conftest import ESMFOLD_JOB

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
PARAM_NAMES = {param.name for spec in MODELS.values() for param in spec.params}


def test_models_lists_what_the_registry_declares(alice, settings):
    settings.PHONOS_MAX_LENGTH = {**settings.PHONOS_MAX_LENGTH, "esmfold": 333}
    listed = {model["id"]: model for model in alice.get("/v1/models").json()["models"]}
    assert list(listed) == list(MODELS)
    for spec in MODELS.values():
        model = listed[spec.id]
        assert model["params"] == spec.params_public()
        assert model["params_schema"] == spec.params_json_schema()
        assert model["outputs"] == spec.outputs.public()
        assert (model["cost_credits"], model["input"]) == (spec.cost_credits, spec.input_kind)
    assert listed["esmfold"]["max_sequence_length"] == 333
    assert listed["vina"]["input"] == "ligand" and listed["esmfold"]["input"] == "protein"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        # 1-24, as the API always published (the runner once took 0 too).
        ({"num_recycles": 0}, "params.num_recycles must be between 1 and 24"),
        ({"num_recycles": 25}, "params.num_recycles must be between 1 and 24"),
        ({"chunk_size": 4097}, "params.chunk_size must be between 1 and 4096"),
        ({"recycles": 3}, "params.recycles is not a parameter of esmfold"),
        ({"cache": "no"}, "params.cache must be true or false"),
    ],
)
def test_validation_applies_the_registry_rules(alice, params, message):
    response = alice.post("/v1/predict", {**ESMFOLD_JOB, "params": params})
    assert response.status_code == 400
    assert response.json()["message"].startswith(message)


VINA_JOB = {
    "model": "vina",
    "params": {
        "protein_pdb": (ROOT / "tests" / "data" / "helix_hairpin.pdb").read_text(),
        "ligand_smiles": "CCO",
    },
}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"pocket_residues": []}, "params.pocket_residues must hold 1 to 100 items"),
        (
            {"pocket_residues": [f"A:{number}" for number in range(101)]},
            "params.pocket_residues must hold 1 to 100 items",
        ),
        ({"pocket_residues": ["A45"]}, "params.pocket_residues: 'A45' is not a residue"),
        ({"pocket_residues": "A:5, A45"}, "params.pocket_residues: 'A45' is not a residue"),
        ({"pocket_residues": [5]}, "params.pocket_residues must be a list of strings"),
        ({"pocket_residues": {"A": 5}}, "params.pocket_residues must be a list of strings"),
        ({"ph": 14.5}, "params.ph must be between 0 and 14"),
        ({"pocket_margin": 21}, "params.pocket_margin must be between 0 and 20"),
        ({"keep_hetero": 1}, "params.keep_hetero must be one of: none, cofactors, all"),
        ({"scoring": "dock6"}, "params.scoring must be one of: vina, vinardo"),
        ({"ranking": "best"}, "params.ranking must be one of: consensus, score"),
        (
            {"pocket_ligand_sdf": "x" * 100_001},
            "params.pocket_ligand_sdf must be at most 100000 characters",
        ),
        ({"ligand_mol2": "x" * 100_001}, "params.ligand_mol2 must be at most 100000 characters"),
    ],
)
def test_docking_params_follow_the_registry_rules(alice, params, message):
    response = alice.post("/v1/predict", {**VINA_JOB, "params": {**VINA_JOB["params"], **params}})
    assert response.status_code == 400
    assert response.json()["message"].startswith(message)


def test_a_list_param_publishes_its_bounds_and_item_format(settings):
    pocket = MODELS["vina"].param("pocket_residues")
    schema = pocket.json_schema()
    assert (schema["type"], schema["minItems"], schema["maxItems"]) == ("array", 1, 100)
    assert schema["items"]["pattern"] == pocket.public()["item_pattern"] == pocket.item_pattern
    pattern = schema["items"]["pattern"]
    assert re.search(pattern, "A:45") and re.search(pattern, "B:-3a")
    assert not re.search(pattern, "A45") and not re.search(pattern, "A:45 ")
    assert pocket.check("A:5, A:9 B:7") == ["A:5", "A:9", "B:7"]
    # Vina's length limit bounds the cropped receptor: the worker's runner option, from settings.
    settings.PHONOS_MAX_LENGTH = {**settings.PHONOS_MAX_LENGTH, "vina": 77}
    assert MODELS["vina"].runner_options(settings) == {"max_residues": 77}
    assert MODELS["vina"].crops_receptor and not MODELS["diffdock"].crops_receptor


def test_a_job_stores_its_params_with_the_registry_defaults(alice):
    job_id = alice.post("/v1/predict", ESMFOLD_JOB).json()["job_id"]
    assert alice.get(f"/v1/jobs/{job_id}").json()["params"] == MODELS["esmfold"].defaults()


def test_the_predict_request_documents_each_models_params():
    schema = openapi_document()
    predict = schema["components"]["schemas"]["PredictInputRequest"]["properties"]["params"]
    assert predict["anyOf"] == [spec.params_json_schema() for spec in MODELS.values()]
    esmfold = predict["anyOf"][0]["properties"]["num_recycles"]
    assert (esmfold["minimum"], esmfold["maximum"], esmfold["default"]) == (1, 24, 4)


def _rule_violations(path: Path) -> list[str]:
    """Comparisons of a registry parameter with a number or a constant, and constants named
    after one (DEFAULT_NUM_POSES, MAX_NUM_RECYCLES): a second copy of a registry rule."""
    tree = ast.parse(path.read_text())
    found = []

    def names(node: ast.AST) -> set[str]:
        seen = set()
        for child in ast.walk(node):
            if isinstance(child, ast.Name):
                seen.add(child.id)
            elif isinstance(child, ast.Attribute):
                seen.add(child.attr)
            elif isinstance(child, ast.Constant) and isinstance(child.value, str):
                seen.add(child.value)
        return seen

    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            mentioned = set().union(*(names(operand) for operand in operands)) & PARAM_NAMES
            # A bound (`<=` a number or a constant) or a set of choices (`in` a tuple or a
            # constant); `==` a constant is dispatch on a value, not a rule.
            ordering = any(isinstance(op, ast.Lt | ast.LtE | ast.Gt | ast.GtE) for op in node.ops)
            membership = any(isinstance(op, ast.In | ast.NotIn) for op in node.ops)
            constant = any(
                (isinstance(operand, ast.Constant) and isinstance(operand.value, int | float))
                or (isinstance(operand, ast.Name) and operand.id.isupper())
                or isinstance(operand, ast.Tuple)
                for operand in operands
            )
            bounded = constant and (ordering or membership)
            if mentioned and bounded:
                found.append(f"{path.name}:{node.lineno} compares {sorted(mentioned)}")
        elif isinstance(node, ast.Assign) and node in tree.body:
            for target in node.targets:
                if isinstance(target, ast.Name) and any(
                    target.id in (f"DEFAULT_{name.upper()}", f"MAX_{name.upper()}")
                    or target.id == f"{name.upper()}S"
                    for name in PARAM_NAMES
                ):
                    found.append(f"{path.name}:{node.lineno} defines {target.id}")
    return found


def test_each_parameter_rule_is_defined_once():
    runners = sorted((ROOT / "workers" / "runners").glob("*.py"))
    assert len(runners) >= 4
    violations = [violation for path in runners for violation in _rule_violations(path)]
    assert violations == []
    # Only the registry declares parameters.
    declaring = [
        str(path.relative_to(ROOT))
        for folder in ("apps", "workers", "phonos")
        for path in (ROOT / folder).rglob("*.py")
        if "Param(" in path.read_text() and "migrations" not in path.parts
    ]
    assert declaring == ["apps/jobs/registry.py"]


def test_the_rule_scan_finds_a_second_copy(tmp_path):
    copy = tmp_path / "runner.py"
    copy.write_text(
        "MAX_NUM_RECYCLES = 24\n"
        "def read(params):\n"
        "    if not 0 <= params['num_recycles'] <= MAX_NUM_RECYCLES:\n"
        "        raise ValueError\n"
        "    if params.msa_mode not in MSA_MODES:\n"
        "        raise ValueError\n"
        "    return params.model_preset == MULTIMER_PRESET\n"
    )
    assert len(_rule_violations(copy)) == 3


def test_prefer_wait_past_the_per_process_bound_answers_at_once(alice, settings):
    """No worker runs: a job stays pending, so a waiting request waits its whole N."""
    settings.PHONOS_PREFER_WAIT_MAX_REQUESTS = 1
    job = {**ESMFOLD_JOB, "params": {"cache": False}}
    with ThreadPoolExecutor(max_workers=1) as pool:
        waiting = pool.submit(alice.post, "/v1/predict", job, headers={"Prefer": "wait=4"})
        deadline = time.monotonic() + 10
        while Job.objects.count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # the first request is now past its submit and waiting
        started = time.perf_counter()
        second = alice.post("/v1/predict", job, headers={"Prefer": "wait=4"})
        assert time.perf_counter() - started < 2
        assert "Preference-Applied" not in second.headers
        assert second.json()["status"] == "pending"
        first = waiting.result()
    assert "Preference-Applied" not in first.headers and first.json()["status"] == "pending"
