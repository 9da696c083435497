"""Land cover per host, as the thesis measured it: each machine's bytes in and out, CPU as a share of the
machine, memory, per placement plan (Ganglia on the thesis's four machines; here the mini-cluster's hosts,
`minicluster up --hosts N`, sampled by distributed/host_stats.py over each cell's wall-clock window).

The per-process figures (sockets, CPU and wait of each role's process tree: landcover_report.py) stay
beside these, and the two views are checked against each other: the bytes the hosts sent, counted on
their links, against the bytes the roles' sockets sent. The link counts whole frames (headers, acks, the
executors' own Spark traffic), so it is a little above the sockets' payload; when two roles share a host,
what they send each other stays on that host's loopback, which no link sees, and the check is marked
not comparable.
"""
from __future__ import annotations

from distributed.metrics import counter_at

MIB = 1024 * 1024
CHECK_TOLERANCE = 0.05  # the hosts' bytes within 5% of the roles' socket bytes


def bytes_check(cell: dict, rows: list[dict], wall_start: float) -> dict | None:
    """Bytes out of every host's link against bytes out of every role's sockets, over the cell's steady
    window (between the two pauses the chief makes, where every counter stands still, so that both are
    read exactly there: metrics.counter_at). None for a cell without one."""
    steady, measured = cell.get("steady"), (cell.get("bytes_per_step") or {}).get("measured")
    if not steady or not measured:
        return None
    by_host: dict[str, list[dict]] = {}
    for r in rows:
        by_host.setdefault(r["host"], []).append(r)
    hosts_out, exact = 0.0, bool(measured["exact"])
    for series in by_host.values():
        times, values = [wall_start + r["t_s"] for r in series], [r["bytes_out"] for r in series]
        (a, ok_a), (b, ok_b) = (counter_at(times, values, steady[k]) for k in ("from", "to"))
        hosts_out, exact = hosts_out + b - a, exact and ok_a and ok_b
    roles_out = measured["total"] * measured["steps"]
    shared = sorted(name for name, h in (cell.get("hosts") or {}).items() if len(h["roles"]) > 1)
    ratio = hosts_out / roles_out if roles_out else None
    return {"steps": measured["steps"], "hosts_bytes_out": hosts_out, "roles_bytes_out": roles_out, "ratio": ratio,
            "exact": exact, "comparable": not shared and ratio is not None, "shared_hosts": shared,
            "within": ratio is not None and abs(ratio - 1) <= CHECK_TOLERANCE}


def attach(cells: list[dict], sampler, addresses: dict[str, str]) -> None:
    """Give each cell its figures per host over its window ("hosts") and the check ("hosts_check")."""
    rows = list(sampler.rows)
    for cell in cells:
        cell["hosts"] = sampler.between(cell["t_start"], cell["t_end"], addresses)
        check = bytes_check(cell, rows, sampler.wall_start)
        if check:
            cell["hosts_check"] = check


def host_rows(cells: list[dict], batch_size: int, dataset: int) -> list[dict]:
    """One row per plan and host, at the main batch size and data set (the plans' table, per machine)."""
    rows, seen = [], set()
    for cell in cells:
        if not cell.get("hosts") or (cell["batch_size"], cell["dataset"]) != (batch_size, dataset) \
                or cell["plan"] in seen:
            continue
        seen.add(cell["plan"])
        for name, h in sorted(cell["hosts"].items(), key=lambda kv: kv[1]["address"]):
            span = h["seconds"] or None
            rows.append({"cell": cell["id"], "plan": cell["plan"], "host": name, "address": h["address"],
                         "roles": " ".join(h["roles"]), "seconds": h["seconds"],
                         "in MiB": h["bytes_in"] / MIB, "out MiB": h["bytes_out"] / MIB,
                         "in MiB/s": h["bytes_in"] / MIB / span if span else None,
                         "out MiB/s": h["bytes_out"] / MIB / span if span else None,
                         "cpu % of host mean": h["cpu_percent_of_host_mean"],
                         "cpu % of host peak": h["cpu_percent_of_host_peak"],
                         "rss MiB peak": h["rss_bytes_peak"] / MIB})
    return rows


def _fmt(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(rows: list[dict], cells: list[dict], cores: int | None) -> str:
    lines = ["## Placement plans per host", "",
             "Per host of the mini-cluster (a network namespace with its own address and link, and a cgroup: "
             "distributed/host_stats.py), over each plan's cell, as the thesis's Ganglia measured each machine: "
             "bytes in and out of the host's links, both cards (whole frames, MiB/s mean), CPU of the host's "
             "cgroup in % of "
             f"the host ({cores or '?'} cores, shared by every host of this machine; the thesis's machines each "
             "had their own), mean and peak over the sampling interval, and the peak resident memory of the "
             "host's processes. The per-role figures (each role's own process, sockets' payload) are in "
             "the plans' table above; a host runs a Spark executor beside its roles.", "",
             "| plan | host | address | roles | s | in MiB/s | out MiB/s | CPU % of host, mean | "
             "CPU % of host, peak | RSS MiB, peak |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['plan']} | {r['host']} | {r['address']} | {r['roles'] or '-'} | {r['seconds']:.1f} | "
                     f"{_fmt(r['in MiB/s'])} | {_fmt(r['out MiB/s'])} | {_fmt(r['cpu % of host mean'], 1)} | "
                     f"{_fmt(r['cpu % of host peak'], 1)} | {r['rss MiB peak']:.0f} |")
    checked = [c for c in cells if c.get("hosts_check")]
    if checked:
        lines += ["", "The two views checked against each other, per cell, over its steady window (between the "
                      "chief's two pauses, where every counter stands still): MiB out of all hosts' links against "
                      f"MiB out of all roles' sockets (goal: within {CHECK_TOLERANCE:.0%} where every role has a "
                      "host of its own; exact: every counter was read from a sample inside a pause).", "",
                  "| cell | plan | steps | hosts' links, MiB out | roles' sockets, MiB out | links / sockets | exact | "
                  "check |", "|---|---|---|---|---|---|---|---|"]
        for c in checked:
            k = c["hosts_check"]
            verdict = ("within" if k["within"] else "outside") if k["comparable"] else \
                f"not comparable: roles share {', '.join(k['shared_hosts']) or 'no socket bytes'}"
            lines.append(f"| {c['id']} | {c['plan']} | {k['steps']} | {k['hosts_bytes_out'] / MIB:.2f} | "
                         f"{k['roles_bytes_out'] / MIB:.2f} | {_fmt(k['ratio'], 3)} | "
                         f"{'yes' if k['exact'] else 'no'} | {verdict} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: str) -> str | None:
    """Per plan, each host's out and in MiB/s and its CPU % of the host (the thesis's per-machine panels)."""
    if not rows:
        return None
    from jobs.output_files import pyplot, save_png
    plt = pyplot()
    plans = list(dict.fromkeys(r["plan"] for r in rows))
    hosts = list(dict.fromkeys(r["host"] for r in rows))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), layout="constrained")
    width = 0.8 / len(hosts)
    for k, host in enumerate(hosts):
        by_plan = {r["plan"]: r for r in rows if r["host"] == host}
        xs = [i + k * width for i in range(len(plans))]
        label = f"{host.rsplit('-', 1)[-1]}: {by_plan[next(iter(by_plan))]['roles'] or 'no role'}"
        for ax, col in zip(axes, ("out MiB/s", "in MiB/s", "cpu % of host mean")):
            ax.bar(xs, [(by_plan.get(p) or {}).get(col) or 0 for p in plans], width, label=label)
    for ax, title in zip(axes, ("bytes out per host (MiB/s)", "bytes in per host (MiB/s)",
                                "CPU per host (% of the host, mean)")):
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(plans))], plans, rotation=20, fontsize=8)
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=7, title="host: roles", title_fontsize=7)
    return save_png(fig, path)
