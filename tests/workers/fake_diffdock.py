"""A stand-in DiffDock installation for the tests: its `inference` module honours the real
command-line contract (the flags, the YAML applied after them, the complexes CSV, the
`rank{N}_confidence{c:.2f}.sdf` files), docking nothing: each pose is an RDKit conformer of the
ligand placed at the protein's centre."""

from pathlib import Path

INFERENCE_PY = """
import argparse
import csv
import os
import sys

import yaml
from rdkit import Chem
from rdkit.Chem import AllChem
from rdkit.Geometry import Point3D

FAIL_WITH = {fail_with!r}

parser = argparse.ArgumentParser()
parser.add_argument("--config", type=argparse.FileType(mode="r"))
parser.add_argument("--protein_ligand_csv", required=True)
parser.add_argument("--out_dir", required=True)
parser.add_argument("--inference_steps", type=int, default=20)
parser.add_argument("--samples_per_complex", type=int, default=10)
parser.add_argument("--batch_size", type=int, default=10)
parser.add_argument("--actual_steps", type=int, default=None)
args = parser.parse_args()
if args.config:
    # As DiffDock does: the YAML's values replace those of the command line.
    for key, value in yaml.safe_load(args.config).items():
        setattr(args, key, value)
if args.actual_steps > args.inference_steps:
    sys.exit(f"actual_steps {{args.actual_steps}} > inference_steps {{args.inference_steps}}")
if FAIL_WITH:
    print("Traceback (most recent call last):", file=sys.stderr)
    print(FAIL_WITH, file=sys.stderr)
    sys.exit(1)

with open(args.protein_ligand_csv) as stream:
    rows = list(csv.DictReader(stream))
for row in rows:
    coordinates = [
        (float(line[30:38]), float(line[38:46]), float(line[46:54]))
        for line in open(row["protein_path"])
        if line.startswith(("ATOM", "HETATM"))
    ]
    centre = [sum(axis) / len(coordinates) for axis in zip(*coordinates)]
    ligand = Chem.AddHs(Chem.MolFromSmiles(row["ligand_description"]))
    conformers = AllChem.EmbedMultipleConfs(ligand, args.samples_per_complex, randomSeed=7)
    out = os.path.join(args.out_dir, row["complex_name"])
    os.makedirs(out, exist_ok=True)
    for rank, conformer_id in enumerate(conformers, start=1):
        conformer = ligand.GetConformer(conformer_id)
        positions = conformer.GetPositions()
        middle = positions.mean(axis=0)
        for index, position in enumerate(positions):
            shifted = position - middle + centre
            conformer.SetAtomPosition(index, Point3D(*shifted))
        pose = Chem.RemoveHs(Chem.Mol(ligand, confId=conformer_id))
        confidence = 0.5 - 0.25 * rank
        names = [f"rank{{rank}}_confidence{{confidence:.2f}}.sdf"]
        if rank == 1:
            names.append("rank1.sdf")
        for name in names:
            writer = Chem.SDWriter(os.path.join(out, name))
            writer.write(pose)
            writer.close()
    # As DiffDock does, the log names the files it read (server paths a tenant must not see).
    print(f"csv={{args.protein_ligand_csv}}")
    print(f"steps={{args.inference_steps}} samples={{args.samples_per_complex}}")
"""

DEFAULT_CONFIG = """\
inference_steps: 20
samples_per_complex: 10
batch_size: 10
actual_steps: 19
no_final_step_noise: true
"""


def fake_diffdock(directory: Path, *, fail_with: str = "") -> Path:
    """Write the installation into `directory`; `fail_with` makes inference exit 1 with it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "inference.py").write_text(INFERENCE_PY.format(fail_with=fail_with))
    (directory / "default_inference_args.yaml").write_text(DEFAULT_CONFIG)
    return directory
