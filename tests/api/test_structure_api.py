"""Structure import: uploads parsed by gemmi, and RCSB fetches against a local stand-in for
files.rcsb.org serving a real mmCIF, a 404, a 500 and an answer slower than the timeout."""

from collections.abc import Iterator

import pytest
import requests

from tests.api.test_auth_and_errors import assert_error
from tests.fake_rcsb import HELIX_PDB, SLOW, fake_rcsb, helix_mmcif

pytestmark = pytest.mark.django_db(transaction=True)

HELIX_SEQUENCE = "SPEELIKKFLELAKKGDPNWEEIAKLFLEL"


@pytest.fixture
def rcsb(settings) -> Iterator[str]:
    with fake_rcsb({"9ZZZ": 404, "5OOO": 500, "5LOW": SLOW}) as url:
        settings.PHONOS_RCSB_URL = url
        settings.PHONOS_RCSB_TIMEOUT_SECONDS = 0.5
        yield url


def upload(client, name: str, content: bytes):
    return client.post("/v1/structure/parse", files={"file": (name, content)})


def assert_helix(body: dict, structure_format: str) -> None:
    assert body == {
        "format": structure_format,
        "chains": [{"id": "A", "sequence": HELIX_SEQUENCE, "residues": 30}],
        "models": 1,
        "predict_input": {"model": "esmfold", "sequence": HELIX_SEQUENCE},
    }


def test_an_uploaded_pdb_and_mmcif_give_their_chains_and_a_predict_body(alice):
    response = upload(alice, "helix.pdb", HELIX_PDB.read_bytes())
    assert response.status_code == 200, response.text
    assert_helix(response.json(), "pdb")
    response = upload(alice, "helix.cif", helix_mmcif().encode())
    assert response.status_code == 200, response.text
    assert_helix(response.json(), "mmcif")
    predict = alice.post("/v1/predict", json=response.json()["predict_input"])
    assert predict.status_code == 200, predict.text


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("helix.txt", b"ATOM"),
        ("helix.cif", b"data_x\nloop_\n_atom_site.id\n"),
        ("helix.cif", b"not a cif file at all ' \n"),
        ("helix.pdb", b"REMARK nothing here\nEND\n"),
        ("helix.pdb", b"\x00\x01binary"),
    ],
)
def test_a_bad_upload_answers_400(alice, name, content):
    assert_error(upload(alice, name, content), 400)


def test_parse_needs_a_file_and_a_key(alice, live_server):
    wrong_field = alice.post("/v1/structure/parse", files={"upload": ("a.pdb", b"x")})
    assert "file" in assert_error(wrong_field, 400)["message"]
    assert_error(alice.post("/v1/structure/parse", json={"file": "x"}), 415)
    anonymous = requests.post(
        live_server.url + "/v1/structure/parse", files={"file": ("a.pdb", b"x")}, timeout=10
    )
    assert_error(anonymous, 401)


def test_fetch_reads_an_rcsb_entry(alice, rcsb):
    response = alice.get("/v1/structure/fetch/1hlx")
    assert response.status_code == 200, response.text
    assert_helix(response.json(), "mmcif")


@pytest.mark.parametrize(
    ("pdb_id", "status", "error"),
    [
        ("1HL", 400, "Bad Request"),
        ("1HL-", 400, "Bad Request"),
        ("9ZZZ", 404, "Not Found"),
        ("5OOO", 502, "Bad Gateway"),
        ("5LOW", 504, "Upstream timeout"),
    ],
)
def test_fetch_maps_bad_ids_and_rcsb_failures(alice, rcsb, pdb_id, status, error):
    assert assert_error(alice.get(f"/v1/structure/fetch/{pdb_id}"), status)["error"] == error


def test_fetch_from_an_unreachable_rcsb_answers_502(alice, settings):
    settings.PHONOS_RCSB_URL = "http://127.0.0.1:9"
    assert_error(alice.get("/v1/structure/fetch/1HLX"), 502)
