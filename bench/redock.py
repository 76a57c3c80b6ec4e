"""Re-docking the four PoseBusters example complexes through the public API, with a control.

    .venv/bin/python -m bench.redock [--complexes 1ia1,1of6,1s3v,1uou] [--no-control]

Starts gunicorn (the API) and a Celery worker on the `vina` queue against PostgreSQL and Redis,
creates an account, and submits one `vina` job per complex over HTTP: the ligand as the SMILES
of the crystal ligand, the box from the crystal ligand (`pocket_ligand_sdf`), a fixed seed and
otherwise the default params (plus any `--param name=json`). For each complex it reports:

- top-1 and best-of-top-3 heavy-atom RMSD to the crystal ligand (RDKit `CalcRMS`:
  symmetry-aware, no realignment);
- the same under the other ranking of the same poses: by the docking function's score when the
  job ranked by consensus (the default), by consensus (mean rank under Vina and Vinardo; the
  runner scores each pose under both) when it ranked by score;
- whether the top pose passes PoseBusters' "redock" checks (crystal ligand, receptor file);
- a control outside Phonos: Vina run directly (meeko receptor of the protein chains, RDKit
  ETKDG + MMFF ligand, the same box, exhaustiveness 8 and seed).

Uses the database in $DATABASE_URL (default phonos_bench_redock) and Redis in $REDIS_URL.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import requests

from bench.processes import celery_worker_command, free_port, wait_for_log

ROOT = Path(__file__).resolve().parents[1]
DATABASE_URL = os.environ.get(
    "DATABASE_URL", "postgres://postgres:postgres@127.0.0.1:5432/phonos_bench_redock"
)
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/7")
COMPLEXES = ("1ia1", "1of6", "1s3v", "1uou")
SEED = 1
CONTROL_EXHAUSTIVENESS = 8


def dataset_dir() -> Path:
    import posebusters

    return Path(posebusters.__file__).parent / "datasets" / "pdb"


def files(name: str) -> dict[str, Path]:
    folder = dataset_dir() / name
    return {
        "protein": folder / f"{name}_protein_one_lig_removed.pdb",
        "ligand": folder / f"{name}_ligand.sdf",
    }


def start_services(var_dir: Path) -> tuple[str, list[subprocess.Popen]]:
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "phonos.settings",
        "PHONOS_ENV": "development",
        "DEBUG": "false",
        "DATABASE_URL": DATABASE_URL,
        "REDIS_URL": REDIS_URL,
        "PHONOS_VAR_DIR": str(var_dir),
        "PYTHONPATH": str(ROOT),
    }
    database = DATABASE_URL.rsplit("/", 1)[1]
    subprocess.run(
        ["createdb", "-h", "127.0.0.1", "-U", "postgres", database], stderr=subprocess.DEVNULL
    )
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=environment)
    port = free_port()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "phonos.wsgi:application",
            f"--bind=127.0.0.1:{port}",
            "--workers=2",
            "--log-level=warning",
        ],
        cwd=ROOT,
        env=environment,
        stdout=(var_dir / "gunicorn.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    worker_log = var_dir / "worker.log"
    worker = subprocess.Popen(
        celery_worker_command("vina", name="redock@%h"),
        cwd=ROOT,
        env=environment,
        stdout=worker_log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_log(worker_log, "ready.", worker, timeout=120)
    except RuntimeError:
        server.terminate()
        worker.terminate()
        raise
    return f"http://127.0.0.1:{port}", [server, worker]


def api_key() -> str:
    os.environ.update(
        DATABASE_URL=DATABASE_URL, REDIS_URL=REDIS_URL, DJANGO_SETTINGS_MODULE="phonos.settings"
    )
    import django

    django.setup()
    from apps.accounts.services import api_key_create
    from apps.billing.services import account_open

    account = account_open(
        username=f"redock-{time.time_ns()}", email="redock@example.com", credits=1000
    )
    return api_key_create(account=account, name="redock", rate_limit_per_minute=600).raw_key


def dock_through_api(base_url: str, key: str, name: str, extra: dict[str, Any]) -> dict:
    from rdkit import Chem

    paths = files(name)
    crystal = Chem.MolFromMolFile(str(paths["ligand"]))
    headers = {"Authorization": f"Bearer {key}"}
    body = {
        "model": "vina",
        "name": name,
        "params": {
            "protein_pdb": paths["protein"].read_text(),
            "ligand_smiles": Chem.MolToSmiles(crystal),
            "pocket_ligand_sdf": paths["ligand"].read_text(),
            "seed": SEED,
            **extra,
        },
    }
    started = time.monotonic()
    response = requests.post(f"{base_url}/v1/predict", json=body, headers=headers, timeout=60)
    response.raise_for_status()
    job_id = response.json()["job_id"]
    while True:
        job = requests.get(f"{base_url}/v1/jobs/{job_id}", headers=headers, timeout=30).json()
        if job["status"] in {"completed", "failed", "cancelled"}:
            break
        time.sleep(1)
    if job["status"] != "completed":
        raise RuntimeError(f"{name}: {job['status']}: {job.get('error')}")
    results = requests.get(f"{base_url}/v1/jobs/{job_id}/results", headers=headers, timeout=30)
    archive = requests.get(
        f"{base_url}/v1/jobs/{job_id}/results/archive", headers=headers, timeout=60
    )
    poses_sdf = zipfile.ZipFile(io.BytesIO(archive.content)).read(f"{job_id}/poses.sdf")
    return {
        "summary": results.json()["summary"],
        "poses_sdf": poses_sdf.decode(),
        "seconds": time.monotonic() - started,
    }


def read_poses(text: str) -> list:
    from rdkit import Chem

    supplier = Chem.SDMolSupplier()
    supplier.SetData(text, removeHs=False)
    return [molecule for molecule in supplier]


def skeleton(molecule):
    """Heavy atoms and their connections only: protonation at pH 7.4 moves charges and bond
    orders (an amidine, say), which must not stop the atom matching."""
    from rdkit import Chem

    heavy = Chem.RWMol(Chem.RemoveHs(molecule, sanitize=False))
    for atom in heavy.GetAtoms():
        atom.SetFormalCharge(0)
        atom.SetIsAromatic(False)
        atom.SetNoImplicit(True)
        atom.SetNumExplicitHs(0)
    for bond in heavy.GetBonds():
        bond.SetBondType(Chem.BondType.SINGLE)
        bond.SetIsAromatic(False)
    heavy.UpdatePropertyCache(strict=False)
    Chem.FastFindRings(heavy)
    return heavy.GetMol()


def rmsds(poses: list, crystal) -> list[float]:
    from rdkit.Chem import rdMolAlign

    # CalcRMS: symmetry-aware (every atom mapping of the skeleton), in place (no alignment).
    reference = skeleton(crystal)
    return [rdMolAlign.CalcRMS(skeleton(pose), reference) for pose in poses]


def other_order(samples: list[dict[str, Any]], ranking: str) -> tuple[str, list[int]]:
    """The other ranking of the job's poses and its pose indices: by the docking function's
    score alone for a consensus-ranked job, by mean rank under both functions otherwise."""
    other = next(key for key in samples[0] if key.endswith("_score"))
    by_docking = sorted(range(len(samples)), key=lambda i: samples[i]["affinity_kcal_mol"])
    if ranking == "consensus":
        return "score", by_docking
    by_other = sorted(range(len(samples)), key=lambda i: samples[i][other])
    mean_rank = {i: (by_docking.index(i) + by_other.index(i)) / 2 for i in range(len(samples))}
    return "consensus", sorted(
        range(len(samples)), key=lambda i: (mean_rank[i], by_docking.index(i))
    )


def posebusters_redock(pose, name: str) -> tuple[bool, list[str]]:
    from posebusters import PoseBusters
    from rdkit import Chem

    paths = files(name)
    with tempfile.NamedTemporaryFile("w", suffix=".sdf") as predicted:
        writer = Chem.SDWriter(predicted.name)
        writer.write(pose)
        writer.close()
        table = PoseBusters(config="redock").bust(
            mol_pred=predicted.name, mol_true=str(paths["ligand"]), mol_cond=str(paths["protein"])
        )
    row = table.iloc[0]
    checks = [column for column in table.columns if table[column].dtype == bool]
    failed = [str(column) for column in checks if not bool(row[column])]
    return not failed, failed


def direct_vina(name: str) -> list[float]:
    """The control: Vina without the API, the worker or Phonos's ligand preparation: the
    protein chains (no hetero residues) through meeko with its default templates, cropped like
    the runner crops (1OF6 would not prepare whole), the ligand from the crystal SMILES as RDKit
    reads it (neutral, one ETKDG + MMFF conformer), the same box and seed."""
    import gemmi
    import vina
    from meeko import (
        MoleculePreparation,
        PDBQTMolecule,
        PDBQTWriterLegacy,
        RDKitMolCreate,
        ResidueChemTemplates,
    )
    from rdkit import Chem
    from rdkit.Chem import AllChem

    from workers.runners.vina import _crop, _polymer

    paths = files(name)
    crystal = Chem.MolFromMolFile(str(paths["ligand"]))
    structure = gemmi.read_structure(str(paths["protein"]))
    structure.setup_entities()
    structure.remove_ligands_and_waters()
    positions = crystal.GetConformer().GetPositions()
    low, high = positions.min(axis=0), positions.max(axis=0)
    center, size = (low + high) / 2, high - low + 10.0
    cropped, _crop_report = _crop(structure, center=tuple(center), size=tuple(size))
    _polymer_object, rigid = _polymer(
        cropped, templates=ResidueChemTemplates.create_from_defaults(), dropped=[]
    )
    ligand = Chem.AddHs(Chem.MolFromSmiles(Chem.MolToSmiles(crystal)))
    embed = AllChem.ETKDGv3()
    embed.randomSeed = SEED
    AllChem.EmbedMolecule(ligand, embed)
    AllChem.MMFFOptimizeMolecule(ligand)
    ligand_pdbqt, _ok, _error = PDBQTWriterLegacy.write_string(
        MoleculePreparation().prepare(ligand)[0]
    )
    with tempfile.NamedTemporaryFile("w", suffix=".pdbqt") as receptor:
        receptor.write(rigid)
        receptor.flush()
        docker = vina.Vina(sf_name="vina", seed=SEED, verbosity=0)
        docker.set_receptor(receptor.name)
        docker.set_ligand_from_string(ligand_pdbqt)
        docker.compute_vina_maps(center=list((low + high) / 2), box_size=list(high - low + 10.0))
        docker.dock(exhaustiveness=CONTROL_EXHAUSTIVENESS, n_poses=9)
        poses = RDKitMolCreate.from_pdbqt_mol(
            PDBQTMolecule(docker.poses(n_poses=9), is_dlg=False, skip_typing=True)
        )[0]
    return rmsds(
        [Chem.Mol(poses, confId=conformer.GetId()) for conformer in poses.GetConformers()],
        crystal,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--complexes", default=",".join(COMPLEXES))
    parser.add_argument("--no-control", action="store_true")
    parser.add_argument(
        "--param", action="append", default=[], help='name=json, e.g. scoring="vinardo"'
    )
    args = parser.parse_args()
    extra = {item.split("=", 1)[0]: json.loads(item.split("=", 1)[1]) for item in args.param}
    from rdkit import Chem

    var_dir = Path(tempfile.mkdtemp(prefix="phonos-redock-"))
    base_url, processes = start_services(var_dir)
    rows = []
    try:
        key = api_key()
        for name in args.complexes.split(","):
            crystal = Chem.MolFromMolFile(str(files(name)["ligand"]))
            docked = dock_through_api(base_url, key, name, extra)
            poses = read_poses(docked["poses_sdf"])
            values = rmsds(poses, crystal)
            samples = docked["summary"]["samples"]
            alternative, order = other_order(samples, docked["summary"]["ranking"])
            valid, failed = posebusters_redock(poses[0], name)
            other_valid, _ = posebusters_redock(poses[order[0]], name)
            control = [] if args.no_control else direct_vina(name)
            rows.append(
                {
                    "complex": name,
                    "top1": values[0],
                    "best3": min(values[:3]),
                    "ranking": docked["summary"]["ranking"],
                    "other_ranking": alternative,
                    "other_top1": values[order[0]],
                    "other_best3": min(values[i] for i in order[:3]),
                    "posebusters": valid,
                    "failed": failed,
                    "other_posebusters": other_valid,
                    "control_top1": control[0] if control else None,
                    "control_best3": min(control[:3]) if control else None,
                    "seconds": docked["seconds"],
                    "receptor": docked["summary"]["receptor"],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    finally:
        for process in processes:
            process.terminate()
            process.wait()

    def fmt(value: float | None) -> str:
        return "—" if value is None else f"{value:.2f}"

    print(f"\nparams: defaults + pocket_ligand_sdf (crystal ligand), seed {SEED}, {extra}")
    print(
        "| complex | top-1 Å | best of 3 Å | PoseBusters (top-1) | other ranking | its top-1 Å | "
        "its best of 3 Å | its PB | direct Vina top-1 Å | direct best of 3 Å | job s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        passed = "pass" if row["posebusters"] else "fail: " + ", ".join(row["failed"])
        print(
            f"| {row['complex']} | {fmt(row['top1'])} | {fmt(row['best3'])} | {passed} | "
            f"{row['other_ranking']} | {fmt(row['other_top1'])} | {fmt(row['other_best3'])} | "
            f"{'pass' if row['other_posebusters'] else 'fail'} | "
            f"{fmt(row['control_top1'])} | {fmt(row['control_best3'])} | {row['seconds']:.0f} |"
        )


if __name__ == "__main__":
    main()
