"""Land cover per host: the check of the hosts' link bytes against the roles' socket bytes, and the rows,
table and figure per plan and host."""
import pytest

from jobs import landcover_hosts as lh

pytestmark = pytest.mark.unit

MIB = 1024 * 1024


def host(address, roles, bytes_out, bytes_in=0, seconds=10.0, cpu=25.0, rss=300 * MIB):
    return {"address": address, "roles": roles, "seconds": seconds, "bytes_in": bytes_in, "bytes_out": bytes_out,
            "cpu_s": 1.0, "cpu_percent_of_host_mean": cpu, "cpu_percent_of_host_peak": 2 * cpu,
            "rss_bytes_peak": rss}


def link_rows(host_name, counts):
    """A host's samples at t_s 0, 1, 2, ... with these cumulative bytes out (wall_start 1000)."""
    return [{"t_s": float(t), "host": host_name, "bytes_out": b} for t, b in enumerate(counts)]


# the chief paused at wall 1001.2-1002.0 (middle 1001.6) and 1004.4-1005.5: the counters stand still there
STEADY = {"from": [1001.2, 1001.6, 1002.0], "to": [1004.4, 1004.9, 1005.5]}


def cell(hosts, roles_bytes, steps=4, exact=True):
    return {"id": "c1", "plan": "default", "batch_size": 20, "dataset": 240, "hosts": hosts, "steady": STEADY,
            "bytes_per_step": {"measured": {"steps": steps, "total": roles_bytes / steps, "exact": exact}}}


def test_the_hosts_link_bytes_are_checked_against_the_roles_socket_bytes_over_the_steady_window():
    hosts = {"h-1": host("198.18.0.2", ["ps:0"], 0), "h-2": host("198.18.0.3", ["worker:0"], 0)}
    # samples each second: t_s 2 (wall 1002.0) falls in the first pause, t_s 5 (wall 1005.0) in the second
    rows = (link_rows("h-1", [50, 100, 100, 600, 900, 1100, 1100, 1300])
            + link_rows("h-2", [0, 10, 10, 3000, 5000, 6010, 6010, 7000]))
    check = lh.bytes_check(cell(hosts, roles_bytes=7000), rows, wall_start=1000.0)
    # h-1: 1100 - 100, h-2: 6010 - 10, read at t_s 2 and 5 (inside the pauses)
    assert check["hosts_bytes_out"] == 7000 and check["roles_bytes_out"] == 7000 and check["steps"] == 4
    assert check["ratio"] == 1 and check["exact"] and check["comparable"] and check["within"]
    assert not lh.bytes_check(cell(hosts, roles_bytes=6000), rows, 1000.0)["within"]  # links 17% above
    assert not lh.bytes_check(cell(hosts, 7000, exact=False), rows, 1000.0)["exact"]  # a role's read was not
    hosts["h-2"]["roles"] = ["worker:0", "worker:1"]  # two roles on one host: their bytes stay on its loopback
    shared = lh.bytes_check(cell(hosts, 7000), rows, 1000.0)
    assert not shared["comparable"] and shared["shared_hosts"] == ["h-2"]
    assert lh.bytes_check({"id": "c2", "plan": "default"}, rows, 1000.0) is None  # no steady window


def test_one_row_per_plan_and_host_at_the_main_batch_size_in_mib_per_second():
    figures = {"h-2": host("198.18.0.3", ["worker:0"], 20 * MIB, 10 * MIB),
               "h-1": host("198.18.0.2", ["ps:0"], 5 * MIB)}
    cells = [{"id": "c1", "plan": "default", "batch_size": 20, "dataset": 240, "hosts": figures},
             {"id": "c2", "plan": "default", "batch_size": 10, "dataset": 240, "hosts": figures},  # other batch
             {"id": "c3", "plan": "scheme2", "batch_size": 20, "dataset": 240},                   # no hosts
             {"id": "c4", "plan": "default", "batch_size": 20, "dataset": 240, "hosts": figures}]  # plan seen
    rows = lh.host_rows(cells, 20, 240)
    assert [(r["cell"], r["host"]) for r in rows] == [("c1", "h-1"), ("c1", "h-2")]  # by address
    assert rows[1]["out MiB/s"] == pytest.approx(2.0) and rows[1]["in MiB/s"] == pytest.approx(1.0)
    assert rows[1]["roles"] == "worker:0" and rows[1]["rss MiB peak"] == 300


def test_the_table_states_its_units_and_the_check_and_the_figure_is_drawn(tmp_path):
    hosts = {"h-1": host("198.18.0.2", ["ps:0"], 2 * MIB), "h-2": host("198.18.0.3", ["chief:0", "worker:0"], MIB)}
    rows_ = link_rows("h-1", [0, 0, 0, MIB, 2 * MIB, 2 * MIB]) + link_rows("h-2", [0, 0, 0, MIB, MIB, MIB])
    cells = [cell(hosts, roles_bytes=3 * MIB)]
    cells[0]["hosts_check"] = lh.bytes_check(cells[0], rows_, 1000.0)
    rows = lh.host_rows(cells, 20, 240)
    text = lh.markdown(rows, cells, cores=2)
    assert "| in MiB/s | out MiB/s | CPU % of host, mean |" in text and "(2 cores" in text
    assert "| default | h-1 | 198.18.0.2 | ps:0 | 10.0 | 0.00 | 0.20 | 25.0 | 50.0 | 300 |" in text
    assert "| c1 | default | 4 | 3.00 | 3.00 | 1.000 | yes | not comparable: roles share h-2 |" in text
    path = lh.plot(rows, str(tmp_path / "hosts.png"))
    assert path and (tmp_path / "hosts.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert lh.plot([], str(tmp_path / "none.png")) is None
