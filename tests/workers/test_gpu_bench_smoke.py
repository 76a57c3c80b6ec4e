"""bench/gpu_esmfold.sh --smoke: the GPU benchmark's own steps on a CPU, end to end, so the
script is known to run before a GPU is lent (its full-size build is checked, on the meta
device, in test_esmfold_batching.py)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_gpu_benchmark_runs_end_to_end_in_smoke_mode(tmp_path: Path) -> None:
    figures = tmp_path / "figures.json"
    result = subprocess.run(
        [str(ROOT / "bench" / "gpu_esmfold.sh"), "--smoke", "--json", str(figures)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    out = result.stdout
    # Folds through the production runner, one line per length, then the throughput report.
    for length in (16, 32, 48, 64):
        assert re.search(rf"L=\s*{length}:\s+\d+\.\d\d s, peak n/a \(cpu\)", out), out
    assert re.search(r"one at a time: \d+\.\d\d s, \d+\.\d+ jobs/s", out), out
    assert re.search(r"batched \(\d+ passes of [\d, ]+ jobs\): \d+\.\d\d s", out), out
    assert re.search(r"batched / one at a time: \d+\.\d\dx jobs/s", out), out

    report = json.loads(figures.read_text())
    assert report["smoke"] is True and report["gpu"] == "cpu (smoke)"
    (fold,) = report["folds"].values()
    assert [row["length"] for row in fold["rows"]] == [16, 32, 48, 64]
    assert all(row["error"] is None and row["seconds"] > 0 for row in fold["rows"])
    throughput = report["throughput"]
    assert throughput["alone_s"] > 0 and throughput["batched_s"] > 0
    assert sum(throughput["passes"]) == 16 and max(throughput["passes"]) > 1
    assert throughput["ratio"] == pytest.approx(
        throughput["alone_s"] / throughput["batched_s"], rel=0.05
    )
