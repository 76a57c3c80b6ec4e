"""Tiny, randomly initialised model checkpoints for tests and benchmarks.

They load and run through the production code paths offline in well under a second. Their
outputs mean nothing, so each is marked untrained and runners report that in their metadata.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from transformers import EsmConfig, EsmForProteinFolding, EsmTokenizer
from transformers.models.esm.configuration_esm import get_default_vocab_list

from workers.runners.esmfold import ALPHABET, UNTRAINED_CONFIG_KEY

# Special tokens after the residues, as in facebook/esmfold_v1's tokenizer.
_ESMFOLD_SPECIAL_TOKENS = ("<pad>", "<mask>", "<cls>", "<sep>", "<eos>")


def write_tiny_esmfold(path: Path, *, seed: int = 0) -> Path:
    """Write an ESMFold checkpoint (config, weights, tokenizer) of ~100k random parameters."""
    config = EsmConfig(
        # The language model is ESM-2 shaped (rotary positions, 33-token vocabulary), only tiny.
        vocab_size=33,
        pad_token_id=1,
        mask_token_id=32,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        position_embedding_type="rotary",
        emb_layer_norm_before=False,
        token_dropout=True,
        is_folding_model=True,
        vocab_list=list(get_default_vocab_list()),
        esmfold_config={
            "fp16_esm": False,
            "lddt_head_hid_dim": 16,
            "trunk": {
                "num_blocks": 1,
                "sequence_state_dim": 32,
                "pairwise_state_dim": 16,
                "sequence_head_width": 16,
                "pairwise_head_width": 8,
                "structure_module": {
                    "sequence_dim": 32,
                    "pairwise_dim": 16,
                    "ipa_dim": 8,
                    "resnet_dim": 16,
                    "num_heads_ipa": 2,
                    "num_qk_points": 4,
                    "num_v_points": 4,
                    "num_blocks": 2,
                },
            },
        },
    )
    setattr(config, UNTRAINED_CONFIG_KEY, True)
    # A private RNG stream: the same seed gives the same weights without touching global state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = EsmForProteinFolding(config)
        with torch.no_grad():
            # ESMFold zero-initialises its output layers (backbone update, pair updates), which
            # would put every atom at the origin; random weights exercise real geometry instead.
            for parameter in model.parameters():
                if parameter.dim() >= 2:
                    parameter.normal_(0.0, 1.0 / math.sqrt(parameter.shape[-1]))

    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    vocab_file = path / "vocab.txt"
    vocab_file.write_text("\n".join([*ALPHABET, *_ESMFOLD_SPECIAL_TOKENS]) + "\n")
    tokenizer = EsmTokenizer(vocab_file=str(vocab_file))
    # As transformers' ESMFold conversion script sets it.
    tokenizer.pad_token_id = 0
    tokenizer.save_pretrained(path)
    return path


def main(argv: list[str] | None = None) -> None:
    """`python -m workers.checkpoints PATH`: a worker-side command (it needs torch), so it lives
    with the workers rather than among the API's management commands."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m workers.checkpoints",
        description="Write a tiny, randomly initialised ESMFold checkpoint for smoke-testing a "
        "deployment. Its structures are meaningless; jobs run on it are marked untrained.",
    )
    parser.add_argument("path", type=Path, help="Directory to write (save_pretrained layout)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    written = write_tiny_esmfold(args.path, seed=args.seed)
    print(f"Wrote an UNTRAINED ESMFold checkpoint to {written}")
    print(f"Point workers at it with PHONOS_ESMFOLD_WEIGHTS={written}")


if __name__ == "__main__":
    main()
