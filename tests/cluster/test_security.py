"""Probes of what a local user can see or reach during and after the tiny runs, done as an attacker
would: command lines in /proc, log files, file modes, an expired UI token. The tiny runs are the
session's (conftest), watched while they ran."""
import base64
import re
import stat
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from distributed.minicluster import JWS_FILTER, security_conf, ui_token

from .conftest import MASTER_TRAFFIC, TF_PROBES, TINY_CMDLINES, TINY_STDOUT

HEX_SECRET = re.compile(rb"(?<![0-9a-fA-F])[0-9a-f]{64}(?![0-9a-fA-F])")  # secrets.token_hex(32): cluster and job
CASES = ["redshift", "landcover", "domst"]


def secrets_of(cluster) -> list[bytes]:
    conf = security_conf(cluster.state.secret)
    return [cluster.state.secret.encode(), conf[f"spark.{JWS_FILTER}.param.secretKey"].encode(),
            base64.urlsafe_b64decode(conf[f"spark.{JWS_FILTER}.param.secretKey"])]


def leaks(data: bytes, cluster) -> list[str]:
    """What in `data` a reader could use: the cluster's secret or UI key, any job secret (64 hex),
    a TFoS manager authkey."""
    found = [f"secret {s[:6]!r}..." for s in secrets_of(cluster) if s in data]
    found += [f"64-hex token {m.group()[:8]!r}..." for m in HEX_SECRET.finditer(data)]
    found += [f"authkey at byte {m.start()}" for m in re.finditer(rb"authkey", data, re.IGNORECASE)]
    return found


def run_files(cluster) -> list[Path]:
    """The logs a run leaves: the daemons' logs and every executor's stdout and stderr."""
    files = [p for p in (cluster.run_dir / "logs").rglob("*") if p.is_file()]
    files += [p for p in cluster.run_dir.glob("worker-*/**/*") if p.is_file()]
    return files


@pytest.mark.parametrize("case", CASES)
def test_no_secret_on_any_command_line_while_a_job_runs(request, minicluster, case):
    request.getfixturevalue(f"tiny_{case}")
    seen = TINY_CMDLINES[case]
    # The watch saw the run: the driver's JVM and the executors' JVMs and Python workers.
    assert any("SparkSubmit" in c for c in seen), sorted(seen)[:5]
    assert any("CoarseGrainedExecutorBackend" in c for c in seen), sorted(seen)[:5]
    found = {c[:120]: leaks(c.encode(), minicluster) for c in seen}
    assert {c: f for c, f in found.items() if f} == {}


@pytest.mark.parametrize("case", CASES)
def test_no_secret_or_authkey_in_any_log(request, minicluster, case):
    request.getfixturevalue(f"tiny_{case}")
    files = run_files(minicluster)
    assert any(p.name == "stderr" for p in files), "executor logs should be there to read"
    found = {str(p): leaks(p.read_bytes(), minicluster) for p in files}
    found["job stdout"] = leaks(TINY_STDOUT[case].encode(), minicluster)
    assert {p: f for p, f in found.items() if f} == {}


@pytest.mark.parametrize("case", CASES)
def test_run_folder_and_logs_are_owner_only(request, minicluster, case):
    request.getfixturevalue(f"tiny_{case}")
    assert stat.S_IMODE(minicluster.run_dir.stat().st_mode) == 0o700
    open_to_others = {str(p): oct(stat.S_IMODE(p.stat().st_mode))
                      for p in [minicluster.run_dir / "logs", *minicluster.run_dir.glob("worker-*/**/*"),
                                *run_files(minicluster), minicluster.conf_file]
                      if stat.S_IMODE(p.stat().st_mode) & 0o077}
    assert open_to_others == {}


def test_an_expired_ui_token_is_refused(minicluster):
    def status(token: str) -> int:
        req = urllib.request.Request(f"{minicluster.state.master_ui}/json/",
                                     headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status
        except urllib.error.HTTPError as err:
            return err.code
    assert status(ui_token(minicluster.state.secret)) == 200
    assert status(ui_token(minicluster.state.secret, ttl_s=-120)) in (401, 403)
    assert status(ui_token("not-the-secret")) in (401, 403)


def test_tf_servers_refuse_every_connection_but_the_runs_own(minicluster, tiny_landcover):
    """During the land-cover run: each TF server's port, reached from inside the run's private network
    (the servers are there; on hosts, the TF card of the server's host), is refused from every address of
    this machine outside it, and on hosts from the server's own host off its TF card."""
    from distributed import netns, processes
    found = TF_PROBES["landcover"]
    roles = {role for role, _, _ in found["servers"]}
    assert roles == {"ps:0", "chief:0", "worker:0", "worker:1", "worker:2"}
    assert found["member"] == {role: 0 for role in roles}
    for role, per_address in found["outsider"].items():
        assert "127.0.0.1" in per_address, per_address
        assert all(code != 0 for code in per_address.values()), f"{role}: {per_address}"
    if minicluster.network:  # the hosts' TF cards: the cluster's, kept while it runs
        assert found["tf_subnet"] == minicluster.network.tf_subnet, found
        # each server also tried from its own host: its address there, and its TF card's (no route)
        assert all(sum("->" in k for k in per_address) == 2 for per_address in found["outsider"].values()), found
        return
    assert found.get("network"), f"the TF servers should run in a private network: {found}"
    # Removed by name when the run ended, and none left behind by a driver that died.
    assert found["network"] not in netns.names()
    orphans = [n for n in netns.names() if not processes.alive(int(n[len(netns.PREFIX):].split("-")[0]))]
    assert orphans == []


def test_spark_rpc_is_encrypted_on_the_wire(minicluster):
    """The workers' registration with the master, as a root eavesdropper on the machine captured it (on
    loopback, or on the hosts' bridge and cards): bytes went by, and none of Spark's message classes or
    the workers' ids can be read in them."""
    if not MASTER_TRAFFIC:
        pytest.skip("capturing packets needs root")
    data = b"".join(MASTER_TRAFFIC[0])
    assert len(data) > 1000, "the registration traffic should have been captured"
    assert b"RegisterWorker" not in data and b"DeployMessages" not in data and b"worker-2" not in data
