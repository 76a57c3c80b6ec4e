"""Small, randomly initialised AlphaFold2 weights in a ColabFold data directory.

The networks are AlphaFold2's own, with fewer blocks in the Evoformer, the extra-MSA stack and
the template pair stack (channel widths stay: the recycling buffers have fixed widths). Their
parameters are written as the real `params_model_N[_ptm|_multimer_v3].npz` files are (flat
`scope//name` keys, unfused triangle multiplications), for all five models of each parameter
set, and load through ColabFold's normal loader. A marker file tells the runner to build the same smaller networks
and to report every job as untrained.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from workers.runners.alphafold2 import (
    MODEL_CONFIG_FILE,
    MODEL_NUMBERS,
    apply_config_overrides,
    params_file_name,
)

TINY_CONFIG_OVERRIDES: dict[str, Any] = {
    "model.embeddings_and_evoformer.evoformer_num_block": 1,
    "model.embeddings_and_evoformer.extra_msa_stack_num_block": 1,
    "model.embeddings_and_evoformer.template.template_pair_stack.num_block": 1,
}
# Models 1 and 2 have template weights, 3 to 5 do not; the pTM models add the PAE head.
_ARCHITECTURE_OF_MODEL = {1: 1, 2: 1, 3: 3, 4: 3, 5: 3}
_PAE_HEAD_SCOPE = "alphafold/alphafold_iteration/predicted_aligned_error_head"
# Small enough that one random block keeps activations, and so coordinates, in range.
_WEIGHT_STD = 0.02
_SHAPE_PROBE_SEQUENCE = "MKTAYIAKQRQISFVKSHF"


MONOMER = "monomer"
MULTIMER = "multimer"
_MULTIMER_SEQUENCES = ("MKTAYIAKQR", "QISFVKSHFS")


def write_tiny_colabfold_params(
    data_dir: Path, *, seed: int = 0, sets: tuple[str, ...] = (MONOMER, MULTIMER)
) -> Path:
    """Write params/params_model_{1..5}{,_ptm}.npz (`monomer`) and/or
    params_model_{1..5}_multimer_v3.npz (`multimer`), and the marker, into `data_dir`."""
    params_dir = data_dir / "params"
    params_dir.mkdir(parents=True, exist_ok=True)
    if MULTIMER in sets:
        # The five multimer models share one architecture (ColabFold compiles model 3 only).
        multimer_shapes = _multimer_parameter_shapes()
        for number in MODEL_NUMBERS:
            rng = np.random.default_rng([seed, number, 3])
            arrays = {key: _random_array(key, shape, rng) for key, shape in multimer_shapes.items()}
            _savez(params_dir / params_file_name("alphafold2_multimer_v3", number), arrays)
    (data_dir / MODEL_CONFIG_FILE).write_text(
        json.dumps({"untrained": True, "config_overrides": TINY_CONFIG_OVERRIDES}, indent=2)
    )
    if MONOMER not in sets:
        return data_dir
    shapes = {number: _parameter_shapes(number) for number in set(_ARCHITECTURE_OF_MODEL.values())}
    for number in MODEL_NUMBERS:
        ptm_shapes = shapes[_ARCHITECTURE_OF_MODEL[number]]
        rng = np.random.default_rng([seed, number])
        ptm_arrays = {key: _random_array(key, shape, rng) for key, shape in ptm_shapes.items()}
        _savez(params_dir / params_file_name("alphafold2_ptm", number), ptm_arrays)
        # The same network without the PAE head, as the real monomer files are.
        monomer_arrays = {
            key: array for key, array in ptm_arrays.items() if not key.startswith(_PAE_HEAD_SCOPE)
        }
        _savez(params_dir / params_file_name("alphafold2", number), monomer_arrays)
    return data_dir


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    # numpy's stub has `allow_pickle: bool` among savez's keywords, which a ** of arrays meets.
    np.savez(path, **arrays)  # type: ignore[arg-type]


def _unfused(model_config: Any) -> Any:
    apply_config_overrides(model_config, TINY_CONFIG_OVERRIDES)
    evoformer = model_config.model.embeddings_and_evoformer
    # The files hold the unfused layout that DeepMind published; ColabFold fuses it on load.
    for stack in (evoformer.evoformer, evoformer.template.template_pair_stack):
        stack.triangle_multiplication_incoming.fuse_projection_weights = False
        stack.triangle_multiplication_outgoing.fuse_projection_weights = False
    model_config.model.num_recycle = 0
    return model_config


def _abstract_shapes(
    runner: Any, features: dict[str, Any], length: int
) -> dict[str, tuple[int, ...]]:
    import jax

    # The recycled inputs, as RunModel.predict passes them.
    previous = {
        "prev_msa_first_row": np.zeros([length, 256], np.float16),
        "prev_pair": np.zeros([length, length, 128], np.float16),
        "prev_pos": np.zeros([length, 37, 3], np.float16),
    }
    abstract = jax.eval_shape(runner.init, jax.random.PRNGKey(0), {**features, "prev": previous})
    return {
        f"{scope}//{name}": tuple(leaf.shape)
        for scope, leaves in abstract.items()
        for name, leaf in leaves.items()
    }


def _multimer_parameter_shapes() -> dict[str, tuple[int, ...]]:
    """`scope//name` -> shape for alphafold2_multimer_v3, from an abstract init (no compute)."""
    from alphafold.model import config, model
    from colabfold.batch import generate_input_feature, mk_mock_template

    model_config = _unfused(config.model_config("model_3_multimer_v3"))
    model_config.model.embeddings_and_evoformer.num_msa = 8
    model_config.model.embeddings_and_evoformer.num_extra_msa = 8
    sequences = list(_MULTIMER_SEQUENCES)
    features, _ = generate_input_feature(
        query_seqs_unique=sequences,
        query_seqs_cardinality=[1] * len(sequences),
        unpaired_msa=[f">101\n{sequence}\n" for sequence in sequences],
        paired_msa=None,
        template_features=[mk_mock_template(sequence) for sequence in sequences],
        is_complex=True,
        model_type="alphafold2_multimer_v3",
        max_seq=8,
    )
    length = sum(len(sequence) for sequence in sequences)
    return _abstract_shapes(model.RunModel(model_config), features, length)


def _parameter_shapes(model_number: int) -> dict[str, tuple[int, ...]]:
    """`scope//name` -> shape for model N with the pTM head, from an abstract init (no compute)."""
    import jax
    from alphafold.model import config, model
    from colabfold.batch import build_monomer_feature, mk_mock_template

    model_config = _unfused(config.model_config(f"model_{model_number}_ptm"))
    # Room for the template rows that models 1 and 2 reserve among the MSA clusters.
    model_config.data.eval.max_msa_clusters = 8
    model_config.data.common.max_extra_msa = 8
    model_config.data.common.num_recycle = 0

    sequence = _SHAPE_PROBE_SEQUENCE
    a3m = "".join(f">{row}\n{sequence}\n" for row in range(12))
    runner = model.RunModel(model_config)
    features = runner.process_features(
        build_monomer_feature(sequence, a3m, mk_mock_template(sequence)), random_seed=0
    )
    return _abstract_shapes(
        runner, jax.tree_util.tree_map(lambda array: array[:1], features), len(sequence)
    )


def _random_array(key: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    name = key.rsplit("//", 1)[1]
    if name == "scale":  # layer norms start as the identity
        return np.ones(shape, np.float32)
    return rng.normal(0.0, _WEIGHT_STD, shape).astype(np.float32)
