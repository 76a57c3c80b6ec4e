"""Throughput of the ESMFold runner on a tiny random checkpoint, loaded once.

Run from the repository root: `.venv/bin/python -m bench.esmfold [--jobs 20]`.

The checkpoint has ~100k parameters against ESMFold's 3.5 B, so the figures measure the
runner's own cost (input checks, one forward pass, PDB and JSON writing) and how it scales
with length, not the throughput of real ESMFold weights.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
import transformers

from workers.checkpoints import write_tiny_esmfold
from workers.runners import JobInputs, ProgressStage, RunResult, get_runner

STANDARD_RESIDUES = "ARNDCQEGHILKMFPSTWYV"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--lengths", default="50,100,200", help="comma-separated, used in turn")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--num-recycles", type=int, default=None)
    parser.add_argument("--chunk-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    lengths = [int(length) for length in args.lengths.split(",")]
    transformers.utils.logging.disable_progress_bar()

    rng = random.Random(args.seed)
    params = {"chunk_size": args.chunk_size, "num_recycles": args.num_recycles}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        checkpoint = write_tiny_esmfold(root / "tiny-esmfold", seed=args.seed)
        runner = get_runner(
            "esmfold", weights=str(checkpoint), device=args.device, local_files_only=True
        )
        started = time.perf_counter()
        runner.load()
        load_s = time.perf_counter() - started

        def ignore_progress(stage: ProgressStage, fraction: float | None) -> None:
            pass

        def run_job(index: int, length: int) -> tuple[float, RunResult]:
            sequence = "".join(rng.choice(STANDARD_RESIDUES) for _ in range(length))
            job_started = time.perf_counter()
            result = runner.run(
                inputs=JobInputs(sequence=sequence, name=f"job-{index}", params=params),
                workdir=root / f"job-{index}",
                progress=ignore_progress,
            )
            return time.perf_counter() - job_started, result

        # Warm-up: first-call allocations are not steady state.
        _, warm_up = run_job(-1, lengths[0])
        seconds_by_length: dict[int, list[float]] = defaultdict(list)
        residues = 0
        started = time.perf_counter()
        for index in range(args.jobs):
            length = lengths[index % len(lengths)]
            job_seconds, _ = run_job(index, length)
            seconds_by_length[length].append(job_seconds)
            residues += length
        elapsed = time.perf_counter() - started

    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"device {warm_up.metadata['device']}, "
        f"{torch.get_num_threads()} CPU threads; tiny untrained checkpoint"
    )
    print(f"load: {load_s:.2f} s")
    for length, seconds in sorted(seconds_by_length.items()):
        print(
            f"L={length:>4}: {len(seconds)} jobs, {statistics.mean(seconds):.3f} s/job mean, "
            f"{max(seconds):.3f} s max"
        )
    print(
        f"{args.jobs} jobs in {elapsed:.2f} s: {args.jobs / elapsed:.2f} jobs/s, "
        f"{residues / elapsed:.0f} residues/s"
    )


if __name__ == "__main__":
    main()
