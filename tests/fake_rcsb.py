"""A stand-in for files.rcsb.org on loopback: every entry is a real mmCIF (written by gemmi from
tests/data/helix_hairpin.pdb) unless `FakeRcsb.failures` names how that entry fails."""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import gemmi

HELIX_PDB = Path(__file__).parent / "data" / "helix_hairpin.pdb"
SLOW = "slow"


def helix_mmcif() -> str:
    structure = gemmi.read_structure(str(HELIX_PDB))
    structure.setup_entities()
    return structure.make_mmcif_document().as_string()


class FakeRcsb(BaseHTTPRequestHandler):
    mmcif = b""
    # Entry id → an HTTP status to answer with, or SLOW to answer only after SLOW_SECONDS.
    failures: dict[str, int | str] = {}
    slow_seconds = 3.0

    def do_GET(self) -> None:
        prefix, _, file_name = self.path.rpartition("/")
        entry, _, extension = file_name.partition(".")
        if prefix != "/download" or extension != "cif":
            self.answer(404, b"not found")
            return
        failure = self.failures.get(entry)
        if failure == SLOW:
            time.sleep(self.slow_seconds)
        elif failure is not None:
            self.answer(int(failure), b"failed")
            return
        self.answer(200, self.mmcif)

    def answer(self, status: int, body: bytes) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped waiting, as a timeout test intends

    def log_message(self, *args) -> None:
        pass


@contextmanager
def fake_rcsb(failures: dict[str, int | str] | None = None) -> Iterator[str]:
    """Serve the stand-in on a free loopback port; yields its base URL."""
    FakeRcsb.mmcif = helix_mmcif().encode()
    FakeRcsb.failures = failures or {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeRcsb)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
