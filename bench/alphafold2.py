"""Inference time of the AlphaFold2 runner on small random weights, per residue.

Run from the repository root: `.venv/bin/python -m bench.alphafold2 [--lengths 32,64,128]`.

The weights have AlphaFold2's channel widths but one block in each stack (48 Evoformer blocks
in the real models), so the figures measure ColabFold's code path (features, one compiled
network, five parameter swaps, PDB and JSON writing) and how it scales with length, not the
speed of real weights. JAX compiles once per padded length: the first job of each length is
reported apart from the steady state.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import jax

from workers.af2_checkpoints import write_tiny_colabfold_params
from workers.runners import JobInputs, ProgressStage, get_runner

STANDARD_RESIDUES = "ARNDCQEGHILKMFPSTWYV"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="32,64,128", help="comma-separated")
    parser.add_argument("--repeats", type=int, default=2, help="timed jobs per length")
    parser.add_argument("--num-models", type=int, default=5)
    parser.add_argument("--num-recycles", type=int, default=3)
    parser.add_argument("--preset", default="monomer_ptm")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    lengths = [int(length) for length in args.lengths.split(",")]

    rng = random.Random(args.seed)
    params = {
        "model_preset": args.preset,
        "msa_mode": "single_sequence",
        "num_models": args.num_models,
        "num_recycles": args.num_recycles,
    }

    def ignore_progress(stage: ProgressStage, fraction: float | None) -> None:
        pass

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        data_dir = write_tiny_colabfold_params(root / "colabfold", seed=args.seed)
        write_s = time.perf_counter() - started
        runner = get_runner("alphafold2", data_dir=str(data_dir))
        started = time.perf_counter()
        runner.load()
        load_s = time.perf_counter() - started

        def run_job(name: str, length: int) -> float:
            sequence = "".join(rng.choice(STANDARD_RESIDUES) for _ in range(length))
            job_started = time.perf_counter()
            runner.run(
                inputs=JobInputs(sequence=sequence, name=name, params=params),
                workdir=root / name,
                progress=ignore_progress,
            )
            return time.perf_counter() - job_started

        rows = []
        for length in lengths:
            first_s = run_job(f"first-{length}", length)
            steady = [run_job(f"job-{length}-{index}", length) for index in range(args.repeats)]
            rows.append((length, first_s, statistics.mean(steady)))

    print(
        f"jax {jax.__version__}, device {jax.devices()[0].platform}, {os.cpu_count()} CPUs; "
        f"random weights (1 block per stack), preset {args.preset}, single sequence, "
        f"{args.num_models} models, {args.num_recycles} recycles"
    )
    print(f"write params (10 files): {write_s:.1f} s; load: {load_s:.1f} s")
    for length, first_s, steady_s in rows:
        print(
            f"L={length:>4}: first job {first_s:6.1f} s (compile included); then "
            f"{steady_s:6.2f} s/job, {1000 * steady_s / length:6.1f} ms/residue, "
            f"{1000 * steady_s / length / args.num_models:6.1f} ms/residue/model"
        )


if __name__ == "__main__":
    main()
