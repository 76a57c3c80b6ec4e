"""Full-size ESMFold (esmfold_v1 shapes, random weights) on a GPU: seconds per fold, peak memory,
and batched throughput against one at a time.

Run from the repository root on a CUDA machine: `bench/gpu_esmfold.sh` (about 5-8 minutes on
an H200; it needs ~20 GB of disk and ~30 GB of RAM for the checkpoint). It refuses to run
without CUDA (exit 2).

1. Builds `EsmForProteinFolding` with the esmfold_v1 configuration (ESM-2 3B language model:
   hidden 2560, 36 layers, 40 heads; folding trunk: 48 blocks, sequence state 1024, pairwise
   state 128; transformers' defaults for the rest, which are esmfold_v1's) with random weights,
   directly on the GPU, and saves it as a checkpoint (language model in fp16, like the real one).
2. Loads it through the production path: `EsmFoldRunner(weights=<dir>, local_files_only=True)`.
3. Folds 128, 256, 384 and 512 residues with the language model in fp16, then in bf16 where the
   GPU supports it (the folding trunk runs in fp32 with TF32 matmuls, as in production).
4. Folds 16 chains of 50-300 residues one at a time, then batched (`batch_plan` + `run_batch`).

`--smoke` runs the same steps on a CPU in seconds, to know the script works before a GPU is
lent: the tiny random checkpoint (`workers.checkpoints`) instead of the full-size build, loaded
through the same production path, shorter chains (16-64 residues; 16 chains of 20-60 for the
throughput), the same report and JSON (`"smoke": true`; peak memory is null on a CPU).

Anchor: the ESMFold paper reports 14.2 s for a 384-residue chain on a V100.
Random weights fold nothing meaningful, but every operation has real shapes, so the timings
and memory are the real model's.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import EsmConfig, EsmForProteinFolding
from transformers.models.esm.configuration_esm import get_default_vocab_list

from workers.runners.esmfold import UNTRAINED_CONFIG_KEY

PAPER_ANCHOR = "ESMFold paper: 14.2 s for 384 residues on a V100"
FOLD_LENGTHS = (128, 256, 384, 512)
SMOKE_FOLD_LENGTHS = (16, 32, 48, 64)


def esmfold_v1_config() -> EsmConfig:
    """facebook/esmfold_v1's configuration: the ESM-2 3B (esm2_t36_3B_UR50D) language model and
    the folding trunk, whose sizes are transformers' TrunkConfig/StructureModuleConfig defaults
    (48 blocks, 1024/128 states, head widths 32; structure module 384/128, 8 blocks)."""
    config = EsmConfig(
        vocab_size=33,
        pad_token_id=1,
        mask_token_id=32,
        hidden_size=2560,
        num_hidden_layers=36,
        num_attention_heads=40,
        intermediate_size=10240,
        max_position_embeddings=1026,
        layer_norm_eps=1e-5,
        position_embedding_type="rotary",
        emb_layer_norm_before=False,
        token_dropout=True,
        is_folding_model=True,
        vocab_list=list(get_default_vocab_list()),
        esmfold_config={
            "fp16_esm": True,
            "lddt_head_hid_dim": 128,
            "trunk": {
                "num_blocks": 48,
                "sequence_state_dim": 1024,
                "pairwise_state_dim": 128,
                "sequence_head_width": 32,
                "pairwise_head_width": 32,
                "position_bins": 32,
                "max_recycles": 4,
                "chunk_size": None,
                "structure_module": {
                    "sequence_dim": 384,
                    "pairwise_dim": 128,
                    "ipa_dim": 16,
                    "resnet_dim": 128,
                    "num_heads_ipa": 12,
                    "num_qk_points": 4,
                    "num_v_points": 8,
                    "num_blocks": 8,
                    "num_transition_layers": 1,
                    "num_resnet_blocks": 2,
                    "num_angles": 7,
                },
            },
        },
    )
    setattr(config, UNTRAINED_CONFIG_KEY, True)
    return config


def build_on(device: str) -> EsmForProteinFolding:
    with torch.device(device):
        return EsmForProteinFolding(esmfold_v1_config())


def parameter_count(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def write_checkpoint(path: Path) -> float:
    """Random full-size weights, built on the GPU (seconds, not minutes of CPU init)."""
    started = time.perf_counter()
    model = build_on("cuda")
    # Stored like facebook/esmfold_v1: the language model in fp16, the trunk in fp32.
    model.esm.half()
    model.save_pretrained(path)
    del model
    gc.collect()
    torch.cuda.empty_cache()
    return time.perf_counter() - started


def _ignore_progress(*_: Any) -> None:
    pass


def fold_timings(runner: Any, lengths: tuple[int, ...], workdir: Path) -> list[dict[str, Any]]:
    from bench.esmfold_batching import mixed_sequences
    from workers.runners import JobInputs

    cuda = runner.device.startswith("cuda")
    rows = []
    for length in lengths:
        (sequence,) = mixed_sequences(1, length, length, seed=length)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        try:
            runner.run(
                inputs=JobInputs(sequence=sequence, name=f"L{length}", params={"chunk_size": None}),
                workdir=workdir / f"L{length}",
                progress=_ignore_progress,
            )
            if cuda:
                torch.cuda.synchronize()
            seconds: float | None = time.perf_counter() - started
            error = None
        except Exception as exc:  # an OOM or the like is a result to report, not a crash
            seconds, error = None, f"{type(exc).__name__}: {exc}"
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
        rows.append(
            {
                "length": length,
                "seconds": seconds,
                "peak_gib": None if peak is None else round(peak, 2),
                "error": error,
            }
        )
        shown = f"{seconds:7.2f} s" if seconds is not None else f"failed ({error})"
        memory = "n/a (cpu)" if peak is None else f"{peak:6.2f} GiB"
        print(f"  L={length:>4}: {shown}, peak {memory}", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workdir", default=None, help="checkpoint and outputs (default: a temp dir)"
    )
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--max-jobs", type=int, default=8)
    parser.add_argument("--max-padding", type=float, default=0.3)
    parser.add_argument(
        "--smoke", action="store_true", help="the same steps on a CPU with a tiny model, seconds"
    )
    args = parser.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        print(
            "bench/gpu_esmfold.py needs a CUDA GPU (torch.cuda.is_available() is False); "
            "use bench/esmfold_batching.py on a CPU",
            file=sys.stderr,
        )
        return 2

    import transformers

    from bench.esmfold_batching import compare, mixed_sequences
    from workers.runners.esmfold import BatchLimits, EsmFoldRunner

    transformers.utils.logging.disable_progress_bar()
    smoke = bool(args.smoke)
    device = "cpu" if smoke else "cuda"
    torch.backends.cuda.matmul.allow_tf32 = True
    gpu = "cpu (smoke)" if smoke else torch.cuda.get_device_name()
    print(f"{gpu}; torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"anchor: {PAPER_ANCHOR}", flush=True)
    report: dict[str, Any] = {"gpu": gpu, "torch": torch.__version__, "smoke": smoke, "folds": {}}

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        root = Path(tmp)
        checkpoint = root / "esmfold-v1-random"
        if smoke:
            from workers.checkpoints import write_tiny_esmfold

            started = time.perf_counter()
            write_tiny_esmfold(checkpoint)
            build_s = time.perf_counter() - started
            print(f"smoke: wrote the tiny random checkpoint in {build_s:.1f} s", flush=True)
        else:
            build_s = write_checkpoint(checkpoint)
            print(f"built and saved random esmfold_v1 in {build_s:.1f} s", flush=True)
        report["build_s"] = round(build_s, 1)

        # On a CPU the language model runs in fp32 whatever gpu_lm_dtype says: one pass.
        if smoke:
            dtypes = ["float16"]
        else:
            dtypes = ["float16"] + (["bfloat16"] if torch.cuda.is_bf16_supported() else [])
        runner = None
        for dtype in dtypes:
            runner = None
            gc.collect()
            if not smoke:
                torch.cuda.empty_cache()
            started = time.perf_counter()
            runner = EsmFoldRunner(
                weights=str(checkpoint), device=device, local_files_only=True, gpu_lm_dtype=dtype
            )
            runner.load()
            load_s = time.perf_counter() - started
            print(
                f"language model {'float32 (cpu)' if smoke else dtype}: loaded in {load_s:.1f} s "
                f"({parameter_count(runner.model) / 1e9:.2f} B parameters)",
                flush=True,
            )
            # Warm-up: CUDA context, kernels, allocator.
            runner.predict(mixed_sequences(1, 64, 64), params={})
            report["folds"][dtype] = {
                "load_s": round(load_s, 1),
                "rows": fold_timings(
                    runner, SMOKE_FOLD_LENGTHS if smoke else FOLD_LENGTHS, root / dtype
                ),
            }

        assert runner is not None
        limits = BatchLimits(
            max_tokens=args.max_tokens, max_jobs=args.max_jobs, max_padding=args.max_padding
        )
        sequences = mixed_sequences(16, 20, 60) if smoke else mixed_sequences(16)
        comparison = compare(
            runner,
            sequences,
            limits=limits,
            params={"chunk_size": None},
            workdir=root / "throughput",
            synchronize=not smoke,
        )
        lengths = sorted(len(sequence) for sequence in sequences)
        print(
            f"16 chains of {lengths[0]}-{lengths[-1]} residues, language model "
            f"{'float32 (cpu)' if smoke else dtypes[-1]}; {limits}"
        )
        print(comparison.report(len(sequences)), flush=True)
        report["throughput"] = {
            "alone_s": round(comparison.alone_s, 2),
            "batched_s": round(comparison.batched_s, 2),
            "ratio": round(comparison.alone_s / comparison.batched_s, 2),
            "passes": [len(group) for group in comparison.groups],
        }
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
