"""ESMFold jobs/s batched against one at a time, for 16 chains of 50-300 residues, in one run.

Run from the repository root: `.venv/bin/python -m bench.esmfold_batching`.

By default it folds with the tiny random checkpoint on the CPU, through the runner a worker
uses (`run` for one at a time; `batch_plan` + `run_batch` batched, files written either way).
`bench/gpu_esmfold.py` runs the same comparison with the full-size model on a GPU.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers

from workers.runners import JobInputs, ProgressStage
from workers.runners.esmfold import BatchItem, BatchLimits, EsmFoldRunner, batch_plan

STANDARD_RESIDUES = "ARNDCQEGHILKMFPSTWYV"


def mixed_sequences(
    count: int = 16, shortest: int = 50, longest: int = 300, seed: int = 0
) -> list[str]:
    """`count` chains with lengths spread evenly from `shortest` to `longest`, in random order."""
    rng = random.Random(seed)
    # One chain is `shortest` long (the GPU bench folds single chains of a set length).
    steps = max(count - 1, 1)
    lengths = [shortest + round(i * (longest - shortest) / steps) for i in range(count)]
    rng.shuffle(lengths)
    return ["".join(rng.choice(STANDARD_RESIDUES) for _ in range(length)) for length in lengths]


def _ignore_progress(stage: ProgressStage, fraction: float | None) -> None:
    pass


@dataclass(frozen=True)
class Comparison:
    alone_s: float
    batched_s: float
    groups: list[list[int]]

    def report(self, jobs: int) -> str:
        sizes = ", ".join(str(len(group)) for group in self.groups)
        return (
            f"one at a time: {self.alone_s:.2f} s, {jobs / self.alone_s:.3f} jobs/s\n"
            f"batched ({len(self.groups)} passes of {sizes} jobs): {self.batched_s:.2f} s, "
            f"{jobs / self.batched_s:.3f} jobs/s\n"
            f"batched / one at a time: {self.alone_s / self.batched_s:.2f}x jobs/s"
        )


def compare(
    runner: EsmFoldRunner,
    sequences: list[str],
    *,
    limits: BatchLimits,
    params: dict[str, Any],
    workdir: Path,
    synchronize: bool = False,
) -> Comparison:
    """Fold every sequence alone, then batched, timing each whole set (files included)."""

    def items(prefix: str) -> list[BatchItem]:
        return [
            BatchItem(
                inputs=JobInputs(sequence=sequence, name=f"job-{index}", params=params),
                workdir=workdir / f"{prefix}-{index}",
                progress=_ignore_progress,
            )
            for index, sequence in enumerate(sequences)
        ]

    def clock() -> float:
        if synchronize:
            torch.cuda.synchronize()
        return time.perf_counter()

    started = clock()
    for item in items("alone"):
        runner.run(inputs=item.inputs, workdir=item.workdir, progress=item.progress)
    alone_s = clock() - started

    batched = items("batched")
    started = clock()
    groups = batch_plan(batched, limits)
    for group in groups:
        for outcome in runner.run_batch([batched[index] for index in group]):
            if isinstance(outcome, Exception):
                raise outcome
    batched_s = clock() - started
    return Comparison(alone_s=alone_s, batched_s=batched_s, groups=groups)


def main() -> None:
    from workers.checkpoints import write_tiny_esmfold

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--max-jobs", type=int, default=8)
    parser.add_argument("--max-padding", type=float, default=0.3)
    parser.add_argument("--num-recycles", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    transformers.utils.logging.disable_progress_bar()

    sequences = mixed_sequences(args.jobs, seed=args.seed)
    limits = BatchLimits(
        max_tokens=args.max_tokens, max_jobs=args.max_jobs, max_padding=args.max_padding
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        checkpoint = write_tiny_esmfold(root / "tiny-esmfold", seed=args.seed)
        runner = EsmFoldRunner(weights=str(checkpoint), device="cpu", local_files_only=True)
        runner.load()
        params = {"num_recycles": args.num_recycles}
        # Warm-up: first-call allocations are not steady state.
        runner.predict(sequences[:2], params=params)
        comparison = compare(runner, sequences, limits=limits, params=params, workdir=root)

    lengths = sorted(len(sequence) for sequence in sequences)
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, cpu, "
        f"{torch.get_num_threads()} threads; tiny untrained checkpoint"
    )
    print(f"{len(sequences)} chains of {lengths[0]}-{lengths[-1]} residues; {limits}")
    print(comparison.report(len(sequences)))


if __name__ == "__main__":
    main()
