"""AlphaFold2 through ColabFold's real model code, on small random weights of its architecture.

One runner is shared by the module (JAX compiles each input shape once, ~20 s on 2 CPU cores);
the MSA server is a local HTTP server speaking ColabFold's MMseqs2 protocol, templates included:
its template search answers a variant of tests/data/helix_hairpin.pdb with that structure, as
an mmCIF file served the way ColabFold's `/template/` endpoint serves PDB70 entries.
"""

from __future__ import annotations

import io
import json
import tarfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import gemmi
import pytest

from tests.optional import require_module

require_module("colabfold", hint="pip install -e '.[alphafold2]'")

from tests.workers.progress import ProgressLog, file_named  # noqa: E402
from workers.af2_checkpoints import MONOMER, write_tiny_colabfold_params  # noqa: E402
from workers.runners import JobInputs, RunnerError, RunResult, get_runner  # noqa: E402
from workers.runners.alphafold2 import DATA_DIR_SETTING, AlphaFold2Runner  # noqa: E402
from workers.runners.msa import MsaClient  # noqa: E402

pytestmark = pytest.mark.slow

HAIRPIN_PDB = Path(__file__).parents[1] / "data" / "helix_hairpin.pdb"
TEMPLATE_ID = "9hhp"  # the hairpin's made-up PDB id
# The hairpin's sequence (SPEELIKKFLELAKKGDPNWEEIAKLFLEL) with two substitutions.
TEMPLATE_QUERY = "SPEELIRKFLELAKKGDPNWEEIAKLFLQL"
TEMPLATE_M8 = f"101\t{TEMPLATE_ID}_A\t0.933\t30\t2\t0\t1\t30\t1\t30\t3.1e-12\t52.4\n"

SEQUENCE = "MKTAYIAKQRQISFVKSHFSRQLE"
# An MMseqs2-style alignment of SEQUENCE: tab-separated hit statistics in the headers,
# lowercase insertions, gaps.
UNIREF_A3M = (
    f">101\n{SEQUENCE}\n"
    ">UniRef100_A0A2N5XQ41\t83\t0.708\t1.4E-12\t0\t23\t24\t1\t23\t24\n"
    "MKTAYIAKQRQISFVKSHFSRQL-\n"
    ">UniRef100_A0A1H8GQR6\t61\t0.541\t3.2E-07\t2\t24\t24\t3\t26\t27\n"
    "--SAYIAKQRkvQISFIKSHFSKQLE\n"
    "\x00"
)
ENV_A3M = f">101\n{SEQUENCE}\n>SRR5438132_4452701\t55\t0.478\t1.1E-05\t0\t20\t24\t0\t20\t22\n" + (
    "MRTAYIAKQRQISYVKSHF-----\n\x00"
)
USER_A3M = (
    f">query\n{SEQUENCE}\n"
    ">hit_1 with an insertion\nMKTAYIAKQRQIgsSFVKSHFSRQLE\n"
    ">hit_2\n--TAYIAKQRQISFVKSHFSRQ--\n"
    ">hit_3\nMKSAYIAKQRQISFVKSHFSRQLE\n"
    ">hit_4\nMKTAYLAKQRQISFVKSHFSRQLD\n"
    ">hit_5\n-KTAYIAKERQISFVKSHFSRQLE\n"
    ">hit_6\nMKTAYIAKQRQVSFVKSHFSRQ--\n"
)


def hairpin_mmcif() -> str:
    """tests/data/helix_hairpin.pdb as a PDB-style mmCIF: SEQRES (_entity_poly_seq), peptide
    components, a release date: what AlphaFold's template featurizer reads."""
    structure = gemmi.read_structure(str(HAIRPIN_PDB))
    structure.name = TEMPLATE_ID.upper()
    structure.setup_entities()
    for entity in structure.entities:
        if entity.entity_type == gemmi.EntityType.Polymer:
            entity.full_sequence = [residue.name for residue in structure[0]["A"]]
    structure.assign_label_seq_id()
    document = structure.make_mmcif_document()
    block = document.sole_block()
    block.set_pair("_exptl.method", gemmi.cif.quote("THEORETICAL MODEL"))
    block.set_mmcif_category(
        "_pdbx_audit_revision_history", {"ordinal": ["1"], "revision_date": ["2020-01-01"]}
    )
    for row in block.find("_chem_comp.", ["id", "type"]):
        row[1] = gemmi.cif.quote("L-peptide linking")
    return document.as_string()


def tar_gz(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, text in files.items():
            data = text.encode()
            member = tarfile.TarInfo(name)
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def template_archive(names: list[str]) -> bytes:
    """ColabFold's /template/<names>: the hits' pdb70 a3m ffindex database and mmCIF files."""
    assert names == [f"{TEMPLATE_ID}_A"], names
    a3m = f">{TEMPLATE_ID}_A\nSPEELIKKFLELAKKGDPNWEEIAKLFLEL\n\x00"
    return tar_gz(
        {
            "pdb70_a3m.ffdata": a3m,
            "pdb70_a3m.ffindex": f"{TEMPLATE_ID}_A\t0\t{len(a3m)}\n",
            f"{TEMPLATE_ID}.cif": hairpin_mmcif(),
        }
    )


class MsaServer:
    """ColabFold's MMseqs2 API on loopback: rate-limits the first submission, then answers
    PENDING, RUNNING, COMPLETE, and a tar.gz; also 429 on the first download. Tickets are
    numbered per query; /template/<names> serves the template files."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.submitted: list[dict[str, str]] = []
        self.tickets: dict[str, str] = {}  # ticket id -> query sequence
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_POST(self) -> None:
                server.requests.append(f"POST {self.path}")
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                from urllib.parse import parse_qs

                server.submitted.append({key: values[0] for key, values in parse_qs(body).items()})
                if len(server.submitted) == 1:
                    self.send_json({"status": "RATELIMIT"})
                    return
                query = server.submitted[-1]["q"].split("\n")[1]
                ticket = f"ticket-{len(server.tickets) + 1}"
                server.tickets[ticket] = query
                self.send_json({"status": "PENDING", "id": ticket})

            def do_GET(self) -> None:
                server.requests.append(f"GET {self.path}")
                kind, _, name = self.path.strip("/").rpartition("/")
                if kind == "ticket" and name in server.tickets:
                    polls = server.requests.count(f"GET {self.path}")
                    self.send_json({"status": "RUNNING" if polls == 1 else "COMPLETE", "id": name})
                elif kind == "result/download" and name in server.tickets:
                    downloads = sum("/result/download/" in request for request in server.requests)
                    if downloads == 1:
                        self.send_response(429)
                        self.send_header("Retry-After", "0")
                        self.end_headers()
                        return
                    self.send_bytes(result_archive(server.tickets[name]))
                elif kind == "template":
                    self.send_bytes(template_archive(name.split(",")))
                else:
                    self.send_response(404)
                    self.end_headers()

            def send_bytes(self, payload: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def send_json(self, body: dict[str, Any]) -> None:
                payload = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def reset(self) -> None:
        self.requests.clear()
        self.submitted.clear()
        self.tickets.clear()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def result_archive(query: str) -> bytes:
    """The tar.gz layout of ColabFold's /result/download: one a3m per database and the template
    search's pdb70.m8 (BLAST tabular). SEQUENCE has homologues and no template; TEMPLATE_QUERY
    has no homologue and the hairpin as its template; any other query, neither."""
    if query == SEQUENCE:
        uniref, env, m8 = UNIREF_A3M, ENV_A3M, ""
    else:
        uniref, env = f">101\n{query}\n\x00", ""
        m8 = TEMPLATE_M8 if query == TEMPLATE_QUERY else ""
    return tar_gz({"uniref.a3m": uniref, "bfd.mgnify30.metaeuk30.smag30.a3m": env, "pdb70.m8": m8})


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_colabfold_params(tmp_path_factory.mktemp("colabfold"), sets=(MONOMER,))


@pytest.fixture(scope="module")
def module_msa_server() -> Iterator[MsaServer]:
    server = MsaServer()
    yield server
    server.close()


@pytest.fixture
def msa_server(module_msa_server: MsaServer) -> MsaServer:
    module_msa_server.reset()
    return module_msa_server


@pytest.fixture(scope="module")
def runner(
    data_dir: Path, module_msa_server: MsaServer, tmp_path_factory: pytest.TempPathFactory
) -> AlphaFold2Runner:
    built = get_runner(
        "alphafold2",
        data_dir=str(data_dir),
        msa_server_url=module_msa_server.url,
        msa_cache_dir=str(tmp_path_factory.mktemp("msa-cache")),
        msa_poll_interval_s=0.01,
    )
    assert isinstance(built, AlphaFold2Runner)
    built.load()
    return built


@pytest.fixture(scope="module")
def single_sequence_run(
    runner: AlphaFold2Runner, tmp_path_factory: pytest.TempPathFactory
) -> tuple[RunResult, ProgressLog]:
    progress = ProgressLog()
    result = runner.run(
        inputs=JobInputs(
            sequence=SEQUENCE,
            name="../my protein",
            params={
                "model_preset": "monomer_ptm",
                "msa_mode": "single_sequence",
                "num_models": 2,
                "num_recycles": 1,
            },
        ),
        workdir=tmp_path_factory.mktemp("single"),
        progress=progress,
    )
    return result, progress


def ca_atoms(pdb_path: Path) -> tuple[str, list[float]]:
    structure = gemmi.read_structure(str(pdb_path))
    (chain,) = list(structure[0])
    residues = list(chain)
    assert all([atom.name for atom in residue].count("CA") == 1 for residue in residues)
    sequence = gemmi.one_letter_code([residue.name for residue in residues]).upper()
    return sequence, [residue["CA"][0].b_iso for residue in residues]


def test_single_sequence_gives_ranked_models_with_plddt_in_b_factors(
    single_sequence_run: tuple[RunResult, ProgressLog],
) -> None:
    result, _ = single_sequence_run
    confidence = json.loads(file_named(result, "confidence.json").read_text())
    samples = confidence["samples"]
    assert [sample["rank"] for sample in samples] == [1, 2]
    assert {sample["model"] for sample in samples} == {"model_1", "model_2"}
    assert samples[0]["mean_plddt"] >= samples[1]["mean_plddt"]
    assert result.primary_file == samples[0]["file"]
    assert "_unrelaxed_rank_001_alphafold2_ptm_model_" in result.primary_file
    assert result.primary_file.startswith("my_protein_")

    for sample in samples:
        sequence, b_factors = ca_atoms(file_named(result, sample["file"]))
        assert sequence == SEQUENCE
        assert b_factors == pytest.approx(sample["plddt"], abs=0.01)
        assert len(sample["pae"]) == len(SEQUENCE) == len(sample["pae"][0])
        assert 0.0 <= sample["ptm"] <= 1.0
        scores = json.loads(file_named(result, sample["scores_file"]).read_text())
        assert scores["plddt"] == sample["plddt"]
        assert scores["pae"] == sample["pae"]
        assert sample["mean_plddt"] == pytest.approx(sum(scores["plddt"]) / len(SEQUENCE), abs=0.05)

    assert confidence["best_sample"] == 0
    assert confidence["plddt"] == samples[0]["plddt"]
    assert confidence["pae"] == samples[0]["pae"]
    assert result.summary["best_sample"] == 0
    assert result.summary["mean_plddt"] == samples[0]["mean_plddt"]
    assert result.summary["ptm"] == samples[0]["ptm"]
    assert [sample["file"] for sample in result.summary["samples"]] == [
        sample["file"] for sample in samples
    ]
    assert file_named(result, "my_protein.a3m").read_text() == f">query\n{SEQUENCE}\n"
    assert {item.role for item in result.files} == {"structure", "confidence", "msa"}


def test_metadata_marks_random_weights_and_no_templates_without_a_server(
    single_sequence_run: tuple[RunResult, ProgressLog], data_dir: Path
) -> None:
    result, progress = single_sequence_run
    metadata = result.metadata
    assert metadata["untrained"] is True
    assert metadata["weights"] == str(data_dir)
    assert metadata["device"] == "cpu"
    # Templates come from the MSA server's search: off by default in single_sequence mode.
    assert metadata["templates"] == {"requested": False, "used": False, "templates": []}
    assert result.summary["templates"] == metadata["templates"]
    assert metadata["msa"] == {"mode": "single_sequence", "sequences": 1}
    assert metadata["params"]["num_models"] == 2
    assert metadata["versions"]["colabfold"] == "1.6.3"
    # The runner was loaded before the job: no loading stage; inference reports per model.
    assert progress.stages() == ["msa", "inference", "writing_outputs"]
    assert [f for stage, f in progress.events if stage == "inference"] == [0.0, 0.5, 1.0]


def test_a_supplied_a3m_is_cut_to_max_msa_seqs_and_runs_the_monomer_models(
    runner: AlphaFold2Runner, tmp_path: Path
) -> None:
    result = runner.run(
        inputs=JobInputs(
            sequence=SEQUENCE,
            name="with-msa",
            params={
                "model_preset": "monomer",
                "msa_mode": "a3m",
                "a3m": USER_A3M,
                "max_msa_seqs": 6,
                "num_models": 1,
                "num_recycles": 1,
            },
        ),
        workdir=tmp_path,
        progress=ProgressLog(),
    )
    used = file_named(result, "with-msa.a3m").read_text()
    assert used.count(">") == 6
    assert "MKTAYIAKQRQIgsSFVKSHFSRQLE" in used and "hit_6" not in used
    assert result.metadata["msa"] == {"mode": "a3m", "sequences": 6}

    (sample,) = json.loads(file_named(result, "confidence.json").read_text())["samples"]
    assert "_rank_001_alphafold2_model_" in sample["file"]
    sequence, b_factors = ca_atoms(file_named(result, sample["file"]))
    assert sequence == SEQUENCE
    assert b_factors == pytest.approx(sample["plddt"], abs=0.01)
    # The monomer models have no pTM head: no pTM, no PAE.
    assert sample["ptm"] is None and sample["pae"] is None
    assert result.summary["ptm"] is None


def test_server_msa_is_searched_once_then_served_from_the_cache(
    data_dir: Path, msa_server: MsaServer, tmp_path: Path
) -> None:
    sleeps: list[float] = []
    client = MsaClient(server_url=msa_server.url, cache_dir=tmp_path / "cache", sleep=sleeps.append)
    a3m, cached = client.fetch(SEQUENCE)
    assert cached is False
    assert a3m == (UNIREF_A3M + ENV_A3M).replace("\x00", "")
    assert msa_server.submitted[-1] == {"q": f">101\n{SEQUENCE}\n", "mode": "env"}
    assert msa_server.requests == [
        "POST /ticket/msa",  # RATELIMIT: backed off and submitted again
        "POST /ticket/msa",
        "GET /ticket/ticket-1",
        "GET /ticket/ticket-1",
        "GET /result/download/ticket-1",  # 429: retried
        "GET /result/download/ticket-1",
    ]
    assert len(sleeps) == 4 and all(seconds >= 0 for seconds in sleeps)

    again = MsaClient(server_url=msa_server.url, cache_dir=tmp_path / "cache")
    assert again.fetch(SEQUENCE) == (a3m, True)
    assert len(msa_server.requests) == 6


def test_the_runner_folds_with_the_server_msa(
    runner: AlphaFold2Runner, msa_server: MsaServer, tmp_path: Path
) -> None:
    progress = ProgressLog()
    result = runner.run(
        inputs=JobInputs(
            sequence=SEQUENCE,
            name="server",
            params={
                "model_preset": "monomer",
                "num_models": 1,
                "num_recycles": 1,
                "use_templates": False,
            },
        ),
        workdir=tmp_path / "job",
        progress=progress,
    )
    assert result.metadata["msa"] == {
        "mode": "mmseqs2_server",
        "sequences": 5,
        "server": msa_server.url,
        "cached": False,
    }
    assert file_named(result, "server.a3m").read_text().count(">") == 5
    sequence, _ = ca_atoms(file_named(result, result.primary_file))
    assert sequence == SEQUENCE
    assert progress.stages()[0] == "msa"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"msa_mode": "a3m", "a3m": f">q\n{SEQUENCE[1:]}\n"}, "first sequence must be the job"),
        ({"msa_mode": "a3m", "a3m": f">q\n{SEQUENCE}\n>h\nMKT\n"}, "a3m sequence 2 has 3"),
    ],
)
def test_bad_input_fails_before_any_work(
    params: dict[str, Any], message: str, tmp_path: Path
) -> None:
    # Parameter rules are checked at submission (tests/api); the runner checks what only it
    # reads: the a3m's content against the job's sequence.
    runner = AlphaFold2Runner(data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(RunnerError, match=message):
        runner.run(
            inputs=JobInputs(sequence=SEQUENCE, name="x", params=params),
            workdir=tmp_path,
            progress=ProgressLog(),
        )


def test_server_templates_are_used_then_served_from_the_cache(
    runner: AlphaFold2Runner, msa_server: MsaServer, tmp_path: Path
) -> None:
    inputs = JobInputs(
        sequence=TEMPLATE_QUERY,
        name="templated",
        params={"model_preset": "monomer", "num_models": 2, "num_recycles": 1},
    )
    progress = ProgressLog()
    result = runner.run(inputs=inputs, workdir=tmp_path / "first", progress=progress)
    ticket = [request for request in msa_server.requests if request.startswith("GET /result")]
    assert msa_server.requests[-1] == f"GET /template/{TEMPLATE_ID}_A", msa_server.requests
    assert ticket and msa_server.submitted[-1]["q"] == f">101\n{TEMPLATE_QUERY}\n"
    templates = result.summary["templates"]
    assert templates == {
        "requested": True,
        "used": True,
        "templates": [
            {
                "query_chains": ["A"],
                "name": f"{TEMPLATE_ID}_A",
                "pdb_id": TEMPLATE_ID,
                "chain": "A",
                "identity": 0.933,
                "evalue": 3.1e-12,
            }
        ],
        # Monomer models 3 to 5 have no template weights.
        "models": ["model_1", "model_2"],
    }
    assert result.metadata["templates"] == {**templates, "cached": False}
    assert result.metadata["params"]["use_templates"] is True
    # The first template job loads the template-enabled networks.
    assert progress.stages() == ["msa", "loading_model", "inference", "writing_outputs"]
    confidence = json.loads(file_named(result, "confidence.json").read_text())
    assert confidence["templates"] == templates
    sequence, _ = ca_atoms(file_named(result, result.primary_file))
    assert sequence == TEMPLATE_QUERY

    requests_before = len(msa_server.requests)
    again = runner.run(inputs=inputs, workdir=tmp_path / "second", progress=ProgressLog())
    assert len(msa_server.requests) == requests_before  # MSA, hits and mmCIF all cached
    assert again.summary["templates"] == templates
    assert again.metadata["templates"]["cached"] is True
    assert again.metadata["msa"]["cached"] is True


def test_template_features_hold_the_template_structure(
    msa_server: MsaServer, tmp_path: Path
) -> None:
    from workers.runners.alphafold2 import _template_features

    client = MsaClient(server_url=msa_server.url, cache_dir=None, sleep=lambda _: None)
    _, cached, search = client.fetch_with_templates(TEMPLATE_QUERY, scratch_dir=tmp_path)
    assert cached is False and search.cached is False
    assert [hit.name for hit in search.hits] == [f"{TEMPLATE_ID}_A"]
    assert search.mmcif_dir is not None and search.mmcif_dir.is_relative_to(tmp_path)
    assert sorted(path.name for path in search.mmcif_dir.iterdir()) == [f"{TEMPLATE_ID}.cif"]

    (features,), used = _template_features([TEMPLATE_QUERY], [TEMPLATE_QUERY], [search])
    assert [name.decode() for name in features["template_domain_names"]] == [f"{TEMPLATE_ID}_A"]
    assert [hit["pdb_id"] for hit in used] == [TEMPLATE_ID]
    # The template's CA coordinates are the hairpin's, residue for residue.
    hairpin = gemmi.read_structure(str(HAIRPIN_PDB))[0]["A"]
    ca_index = 1  # residue_constants.atom_order["CA"]
    positions = features["template_all_atom_positions"][0][:, ca_index].ravel().tolist()
    expected = [coordinate for residue in hairpin for coordinate in residue["CA"][0].pos.tolist()]
    assert positions == pytest.approx(expected, abs=1e-3)
    assert features["template_all_atom_masks"][0][:, ca_index].tolist() == [1.0] * 30


def test_missing_weights_name_the_setting(tmp_path: Path, data_dir: Path) -> None:
    with pytest.raises(RunnerError, match=DATA_DIR_SETTING):
        AlphaFold2Runner(data_dir="").load()
    with pytest.raises(RunnerError, match=f"{DATA_DIR_SETTING}.*params"):
        AlphaFold2Runner(data_dir=str(tmp_path)).load()

    (tmp_path / "params").mkdir()
    for number in range(1, 6):
        source = data_dir / "params" / f"params_model_{number}.npz"
        (tmp_path / "params" / source.name).symlink_to(source)
    partial = AlphaFold2Runner(data_dir=str(tmp_path))
    with pytest.raises(RunnerError, match="monomer_ptm preset needs params_model_1_ptm.npz"):
        partial.run(
            inputs=JobInputs(
                sequence=SEQUENCE,
                name="x",
                params={"model_preset": "monomer_ptm", "msa_mode": "single_sequence"},
            ),
            workdir=tmp_path / "job",
            progress=ProgressLog(),
        )


@pytest.mark.django_db(transaction=True)
def test_an_alphafold2_job_runs_end_to_end(alice, start_worker, s3_storage, data_dir) -> None:
    start_worker(queues="alphafold2", PHONOS_COLABFOLD_DATA_DIR=str(data_dir), **s3_storage)
    response = alice.post(
        "/v1/predict",
        {
            "model": "alphafold2",
            "sequence": SEQUENCE,
            "name": "demo",
            "params": {
                "model_preset": "monomer_ptm",
                "msa_mode": "single_sequence",
                "num_models": 1,
                "num_recycles": 1,
            },
        },
    )
    assert response.status_code == 200, response.text
    job_id = response.json()["job_id"]
    deadline = time.monotonic() + 240
    while (job := alice.get(f"/v1/jobs/{job_id}").json())["status"] not in {"completed", "failed"}:
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
    assert job["status"] == "completed", job.get("error")

    download = alice.get(job["download_url"])
    structure = gemmi.read_pdb_string(download.text)
    residues = list(structure[0]["A"])
    assert gemmi.one_letter_code([residue.name for residue in residues]).upper() == SEQUENCE
    confidence = alice.get(f"/v1/jobs/{job_id}/results/confidence").json()
    assert [residue["CA"][0].b_iso for residue in residues] == pytest.approx(
        confidence["plddt"], abs=0.01
    )
    results = alice.get(f"/v1/jobs/{job_id}/results").json()
    assert results["untrained"] is True
    assert results["summary"]["templates"] == {"requested": False, "used": False, "templates": []}
    assert results["summary"]["best_sample"] == 0
    assert set(results["files"]) == {
        f"{job_id}.pdb",
        "demo_scores_rank_001_alphafold2_ptm_model_1_seed_000.json",
        "demo.a3m",
        "confidence.json",
    }
    assert alice.balance() == 950
