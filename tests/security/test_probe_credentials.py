"""Per-role credentials: each travels in the node RDD element of its own role only (Spark ships a task
only its partition), never in the arguments every role receives; the ps gets the key, a worker its HMAC."""

import pytest

from distributed import tfos
from distributed.param_server import worker_credential
from distributed.async_training import ps_credentials

pytestmark = pytest.mark.unit


class RecordingContext:
    def __init__(self):
        self.calls = []

    def parallelize(self, data, slices):
        self.calls.append((list(data), slices))
        return "rdd"


def test_each_partition_of_the_node_rdd_holds_only_its_own_roles_credential():
    roles = tfos.Roles(ps=1, workers=3)
    creds = ps_credentials(3)
    by_executor = {e: creds.get(name) for e, name in roles.names().items()}
    sc = RecordingContext()
    assert tfos._NodeContext(sc, by_executor).parallelize(range(4), 4) == "rdd"
    (elements, slices), = sc.calls
    assert slices == len(elements) == 4                   # one element, so one credential, per task
    assert elements == [(0, creds["ps:0"]), (1, creds["worker:0"]), (2, creds["worker:1"]), (3, creds["worker:2"])]
    key = bytes.fromhex(creds["ps:0"])
    assert [creds[f"worker:{w}"] for w in range(3)] == [worker_credential(key, w) for w in range(3)]
    assert len(set(creds.values())) == 4 and creds != ps_credentials(3)   # a new key per run


def test_the_node_function_sees_the_executor_id_and_the_role_its_credential():
    seen = []
    run = tfos._keep_credential(lambda it: seen.append(list(it)))
    run(iter([(2, "cred-of-worker-1")]))
    assert seen == [[2]] and tfos._ROLE_CREDENTIAL == "cred-of-worker-1"
    run(iter([(0, None)]))                                 # a role without one gets None, not the last one's
    assert tfos._ROLE_CREDENTIAL is None


def test_a_role_without_its_credential_refuses_to_start():
    from types import SimpleNamespace

    from distributed.async_training import own_credential
    with pytest.raises(RuntimeError, match="worker:1 received no credential"):
        own_credential(SimpleNamespace(credential=None, name="worker:1"))
