"""The authenticated mesh on loopback sockets: every pair connected once, arrays intact, bytes counted,
a peer without the secret refused."""
import socket
import threading

import numpy as np
import pytest

from distributed import halo
from distributed.mesh import Mesh, MeshError
from distributed.ps_wire import MAGIC
from distributed.minicluster import free_ports

pytestmark = pytest.mark.unit


def run_mesh(size: int, fn, secret=b"s" * 32):
    addresses = [f"127.0.0.1:{p}" for p in free_ports("127.0.0.1", size)]
    results, errors = [None] * size, []

    def main(rank):
        mesh = None
        try:
            mesh = Mesh(rank, addresses, secret, timeout_s=30)
            results[rank] = fn(mesh)
        except BaseException as exc:  # noqa: BLE001 -- reported below
            errors.append(exc)
        finally:
            if mesh is not None:
                mesh.close()

    threads = [threading.Thread(target=main, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if errors:
        raise errors[0]
    return results, addresses


def test_halo_exchange_over_the_mesh_equals_the_padded_volume_and_counts_its_bytes():
    shape, grid, r = (7, 6, 5), halo.grid_for(4), 1
    volume = np.random.default_rng(0).normal(size=(1, *shape, 2)).astype(np.float32)
    full = np.pad(volume, [(0, 0)] + [(r, r)] * 3 + [(0, 0)])

    def fn(mesh):
        padded = halo.exchange(halo.scatter(volume, grid, mesh.rank), r, halo.neighbours(mesh.rank, grid), mesh)
        mesh.send((mesh.rank + 1) % 4, "scalar", np.array(float(mesh.rank)))
        scalar = mesh.recv((mesh.rank - 1) % 4, "scalar")
        assert scalar.shape == () and float(scalar) == (mesh.rank - 1) % 4  # a 0-d array arrives 0-d
        return padded, mesh.counters.snapshot()["halo"]

    results, _ = run_mesh(4, fn)
    for rank, (padded, counts) in enumerate(results):
        (d0, d1), (h0, h1), (w0, w1) = halo.block(shape, grid, rank)
        np.testing.assert_array_equal(padded, full[:, d0:d1 + 2 * r, h0:h1 + 2 * r, w0:w1 + 2 * r])
        assert counts["recv_payload"] == halo.halo_voxels(shape, grid, rank, r) * 2 * 4
        assert counts["recv_frame"] > counts["recv_payload"]  # header and MAC on top of the arrays
    assert sum(c["sent_payload"] for _, c in results) == sum(c["recv_payload"] for _, c in results)


def test_a_peer_without_the_secret_is_refused():
    addresses = [f"127.0.0.1:{p}" for p in free_ports("127.0.0.1", 2)]
    outcome = {}

    def rank0():
        try:
            Mesh(0, addresses, b"right" * 8, timeout_s=4).close()
        except MeshError as exc:
            outcome["rank0"] = str(exc)

    t = threading.Thread(target=rank0)
    t.start()
    host, port = addresses[0].rsplit(":", 1)
    for _ in range(50):
        try:
            sock = socket.create_connection((host, int(port)), timeout=2)
            break
        except OSError:
            threading.Event().wait(0.1)
    with sock:
        assert sock.recv(len(MAGIC) + 32)[:len(MAGIC)] == MAGIC
        sock.sendall(b"\0" * 64)              # a wrong answer to the challenge
        assert sock.recv(1) == b"\x00"        # REJECT
    t.join(10)
    assert "did not connect in time" in outcome["rank0"]
