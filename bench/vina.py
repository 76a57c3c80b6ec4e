"""Docking time of the Vina runner for the test protein and ligand.

Run from the repository root: `.venv/bin/python -m bench.vina [--runs 3] [--exhaustiveness 8]`.

The protein is tests/data/helix_hairpin.pdb (30 residues), the ligand 2-naphthol, the box the
runner's default (the whole protein plus a margin, sides clipped to 30 Å). Each run prepares
the receptor and the ligand again, as a job does.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from workers.runners import JobInputs, ProgressStage, get_runner

PROTEIN = Path(__file__).parents[1] / "tests" / "data" / "helix_hairpin.pdb"
LIGAND = "Oc1ccc2ccccc2c1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--exhaustiveness", type=int, default=8)
    parser.add_argument("--num-poses", type=int, default=9)
    parser.add_argument("--cpus", type=int, default=0, help="0: every core")
    args = parser.parse_args()

    runner = get_runner("vina", cpus=args.cpus)
    params = {
        "protein_pdb": PROTEIN.read_text(),
        "exhaustiveness": args.exhaustiveness,
        "num_poses": args.num_poses,
    }

    def ignore_progress(stage: ProgressStage, fraction: float | None) -> None:
        pass

    totals, dockings, best = [], [], []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            result = runner.run(
                inputs=JobInputs(sequence=LIGAND, name="bench", params={**params, "seed": run + 1}),
                workdir=Path(tmp),
                progress=ignore_progress,
            )
            totals.append(time.perf_counter() - started)
        dockings.append(result.metadata["timings"]["docking_s"])
        best.append(result.summary["best_affinity_kcal_mol"])
        box = result.metadata["params"]["box"]

    print(f"protein {PROTEIN.name}, ligand {LIGAND}, box size {box['size']} Å")
    print(f"exhaustiveness {args.exhaustiveness}, {args.num_poses} poses, {args.runs} runs")
    print(f"docking s: median {statistics.median(dockings):.2f}, max {max(dockings):.2f}")
    print(f"whole job s (prepare + dock + write): median {statistics.median(totals):.2f}")
    print(f"best affinity kcal/mol: {', '.join(f'{value:.2f}' for value in best)}")


if __name__ == "__main__":
    main()
