"""TFoS role layout: executor ids per role, the missing ones, and checking what TFoS assigned."""
import pytest

from distributed.tfos import RoleFailed, Roles, check_assignment, missing_roles, node_address

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("roles, template, names", [
    (Roles(ps=1, workers=2), {"ps": [0], "worker": [1, 2]},
     {0: "ps:0", 1: "worker:0", 2: "worker:1"}),
    (Roles(ps=1, workers=3, chief=True), {"ps": [0], "chief": [1], "worker": [2, 3, 4]},
     {0: "ps:0", 1: "chief:0", 2: "worker:0", 3: "worker:1", 4: "worker:2"}),
    (Roles(ps=2, workers=1), {"ps": [0, 1], "worker": [2]},
     {0: "ps:0", 1: "ps:1", 2: "worker:0"}),
    (Roles(ps=0, workers=2), {"worker": [0, 1]}, {0: "worker:0", 1: "worker:1"}),
])
def test_template_and_names(roles, template, names):
    assert roles.template() == template
    assert list(roles.template()) == list(template)  # ps first, then chief, then workers
    assert roles.names() == names
    assert roles.total == len(names)


def test_missing_roles():
    roles = Roles(ps=1, workers=3, chief=True)
    assert missing_roles(roles, []) == ["ps:0 (executor 0)", "chief:0 (executor 1)", "worker:0 (executor 2)",
                                        "worker:1 (executor 3)", "worker:2 (executor 4)"]
    assert missing_roles(roles, [0, 3]) == ["chief:0 (executor 1)", "worker:0 (executor 2)",
                                            "worker:2 (executor 4)"]
    assert missing_roles(roles, range(5)) == []
    assert missing_roles(Roles(ps=1, workers=2), {0: "reg", 1: "reg"}) == ["worker:1 (executor 2)"]


def _info(*nodes) -> list[dict]:
    """cluster_info entries as TFCluster reports them: (job, task, port) on 127.0.0.1."""
    return [{"executor_id": i, "job_name": job, "task_index": task, "host": "127.0.0.1", "port": port}
            for i, (job, task, port) in enumerate(nodes)]


def test_check_assignment_accepts_the_asked_roles_in_any_order():
    roles = Roles(ps=1, workers=2, chief=True)
    info = _info(("ps", 0, 4000), ("chief", 0, 4001), ("worker", 0, 4002), ("worker", 1, 4003))
    check_assignment(roles, info)
    check_assignment(roles, list(reversed(info)))


@pytest.mark.parametrize("nodes", [
    [("ps", 0, 4000), ("worker", 0, 4001)],                                          # a worker short
    [("ps", 0, 4000), ("worker", 0, 4001), ("worker", 1, 4002), ("worker", 2, 4003)],  # one too many
    [("ps", 0, 4000), ("ps", 1, 4001), ("worker", 0, 4002)],                         # ps instead of worker
    [("ps", 0, 4000), ("chief", 0, 4001), ("worker", 0, 4002)],                      # chief not asked for
])
def test_check_assignment_rejects_wrong_job_counts(nodes):
    with pytest.raises(RoleFailed, match="asked for roles"):
        check_assignment(Roles(ps=1, workers=2), _info(*nodes))


def test_check_assignment_rejects_a_duplicated_task_index():
    info = _info(("ps", 0, 4000), ("worker", 0, 4001), ("worker", 0, 4002))
    with pytest.raises(RoleFailed, match=r"\('worker', 0\), \('worker', 0\)"):
        check_assignment(Roles(ps=1, workers=2), info)


def test_check_assignment_rejects_two_roles_on_one_address():
    info = _info(("ps", 0, 4000), ("worker", 0, 4001), ("worker", 1, 4001))
    with pytest.raises(RoleFailed, match="share one host:port"):
        check_assignment(Roles(ps=1, workers=2), info)
    info[2]["host"] = "127.0.0.2"  # same port on another host is fine
    check_assignment(Roles(ps=1, workers=2), info)


def test_a_failed_roles_own_error_line_is_on_the_first_line_and_its_traceback_below():
    from distributed.tfos import Cluster
    trace = ("Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
             "rdd_io.storage.StorageError: hdfs://nn:9000/out/ps.h5: write failed: Connection refused\n\n")
    text = Cluster._describe({"ps:0": trace, "worker:1": "ValueError: bad shard"})
    first, *rest = text.splitlines()
    assert first == ("ps:0 failed (rdd_io.storage.StorageError: hdfs://nn:9000/out/ps.h5: write failed: Connection "
                     "refused); worker:1 failed (ValueError: bad shard)")
    assert "\n--- ps:0 ---\n" + trace in text and text.endswith("\n--- worker:1 ---\nValueError: bad shard")


def test_a_node_advertises_the_drivers_address_else_the_one_its_worker_binds(monkeypatch):
    monkeypatch.delenv("SPARK_LOCAL_IP", raising=False)
    assert node_address("127.0.0.1") == "127.0.0.1"
    assert node_address(None) is None  # TFoS's own guess
    monkeypatch.setenv("SPARK_LOCAL_IP", "198.18.7.3")  # an executor on a host of the mini-cluster
    assert node_address(None) == "198.18.7.3"
    assert node_address("127.0.0.1") == "127.0.0.1"  # the driver's choice wins
    monkeypatch.setenv("SPARK_LOCAL_IP", "")
    assert node_address(None) is None


def test_on_hosts_tensorflow_gets_each_hosts_tf_card_and_the_port_tfos_reserved():
    from distributed.tfos import tf_cluster_spec
    spec = {"ps": ["198.18.4.2:41000"], "chief": ["198.18.4.3:41001"], "worker": ["198.18.4.3:41002"]}
    cards = {"netns": {}, "address": {"198.18.4.2": "198.18.5.2", "198.18.4.3": "198.18.5.3"},
             "subnet": "198.18.5.0/24"}
    assert tf_cluster_spec(spec, cards) == {"ps": ["198.18.5.2:41000"], "chief": ["198.18.5.3:41001"],
                                            "worker": ["198.18.5.3:41002"]}
    assert tf_cluster_spec(spec, "scidl-tf-1-ab") is spec and tf_cluster_spec(spec, None) is spec
    with pytest.raises(ValueError, match="roles on 198.18.4.9: not hosts"):
        tf_cluster_spec({**spec, "worker": ["198.18.4.9:41002"]}, cards)
