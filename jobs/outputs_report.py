"""One self-contained HTML report of an output root: per case study, the published numbers beside ours with
each difference stated, the tables, the job's report.md and every PNG figure (embedded as base64).

    python -m jobs.outputs_report outputs --html outputs/report.html      (make report)

A case study without outputs under the root is listed as absent; a failed run shows its error. The
published numbers come from the case studies' report modules (jobs/*_report.py), which take them from
REFERENCE_NUMBERS.md; our data is simulated and smaller, so the shape of each finding is what compares.
"""
from __future__ import annotations

import argparse
import base64
import html
import re
import sys
import tempfile
import time
from pathlib import Path

from jobs import outputs_view as ov
from jobs.output_schema import CASES, check

TITLES = {"redshift": "Redshift: asynchronous staleness-aware data parallelism (thesis ch. 5)",
          "landcover": "Land cover: model parallelism across TF workers (thesis ch. 6)",
          "domst": "Dom-ST: one watershed per node (Dom-ST paper and slides)",
          "spacetime": "Space-time parallelism: a 3D network split in space and depth (Sandia slides)"}
MB_PER_MIB = 1024 * 1024 / 1e6


# ---------------------------------------------------------------- stating differences
def _num(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}".rstrip("0").rstrip(".") if isinstance(value, float) \
        else str(value)


def difference(ours, published, unit: str = "", at_least: bool = False, at_most: bool = False) -> str:
    """'ours - published' in words; for a published bound ('more than', 'up to'), whether ours keeps it."""
    if ours is None:
        return "not measured in this run"
    if published is None:
        return "no published number"
    diff = ours - published
    text = f"{'+' if diff >= 0 else '-'}{_num(abs(diff))}{unit}"
    if published:
        text += f" ({ours / published:.2f}x the published value)"
    if at_least:
        text += "; bound kept" if ours > published else "; bound not reached"
    if at_most:
        text += "; within the bound" if ours <= published else "; above the bound"
    return text


def _row(finding: str, published: str, ours: str, diff: str) -> dict:
    return {"finding": finding, "published": published, "ours": ours, "difference": diff}


def _change(values: dict, mode: str):
    """(from workers, to workers, relative change) from 1 worker to the largest cluster with data, else None."""
    tops = [w for (w, m), v in values.items() if m == mode and w > 1 and v is not None]
    if values.get((1, mode)) is None or not tops:
        return None
    one, many = values[(1, mode)], values[(max(tops), mode)]
    return 1, max(tops), (many - one) / one


def redshift_comparisons(folder: Path) -> list[dict]:
    from jobs import redshift_tables as rr
    thesis = rr.THESIS_STABLE[5000]
    theirs = rr._by_size(thesis, 1)
    rows = []
    for n, table in ov.redshift_stable(folder).items():
        ours = rr._by_size(table, 1)
        for mode in rr.DATA_MODES:
            t, o = _change(theirs, mode), _change(ours, mode)
            rows.append(_row(f"Epochs to stable (crit. 1), 1 worker to the largest cluster, {mode} data, "
                             f"{n} samples (Fig. 5.4: about 25% fewer)",
                             f"{100 * t[2]:+.1f}% (1 to {t[1]} workers, 5K)",
                             "not run" if o is None else f"{100 * o[2]:+.1f}% (1 to {o[1]} workers)",
                             "not run" if o is None else f"{100 * (o[2] - t[2]):+.1f} percentage points"))
        for w in sorted({w for w, _ in ours if w > 1}):
            gap = lambda v: abs(v[(w, "same")] - v[(w, "different")]) \
                if v.get((w, "same")) is not None and v.get((w, "different")) is not None else None  # noqa: E731
            rows.append(_row(f"|same - different| epochs to stable (crit. 1) at {w} workers, {n} samples "
                             "(smaller with more nodes)", _num(gap(theirs)), _num(gap(ours)),
                             difference(gap(ours), gap(theirs), " epochs")))
        if n in rr.THESIS_STABLE:
            ref = {(r["cluster"], r["worker"]): r for r in rr.THESIS_STABLE[n]}
            for row in table:
                for col in rr.COLUMNS:
                    published = ref.get((row["cluster"], row["worker"]), {}).get(col)
                    if published is not None and row[col] is not None:
                        rows.append(_row(f"Epochs to stable, {row['cluster']} {row['worker']}, {col} "
                                         f"(Tables 5.1/5.2)", str(published), _num(row[col]),
                                         difference(row[col], published, " epochs")))
    return rows


def landcover_comparisons(folder: Path) -> list[dict]:
    from jobs.landcover_report import THESIS_FIGURES as T
    plans = {row["plan"]: row for row in ov.read_csv(folder / "plans.csv")}
    rows = []
    mb = lambda plan: None if plan not in plans else plans[plan]["worker:2 out MiB/s"] * MB_PER_MIB  # noqa: E731
    for plan, published in T["merging_out_MBps"].items():
        rows.append(_row(f"Merging worker (worker:2) out-traffic, {plan} plan, MB/s", f"about {published}",
                         "not run" if plan not in plans else _num(mb(plan), 3),
                         "plan not run" if plan not in plans else difference(mb(plan), published, " MB/s")))
    if "default" in plans and "scheme2" in plans:
        published = T["merging_out_MBps"]["scheme2"] / T["merging_out_MBps"]["default"]
        rows.append(_row("Merging worker out-traffic, scheme2 over default", _num(published),
                         _num(mb("scheme2") / mb("default")), difference(mb("scheme2") / mb("default"), published)))
    for plan, published in T["merging_wait_percent"].items():
        ours = plans.get(plan, {}).get("worker:2 wait % peak")
        rows.append(_row(f"Merging worker wait, {plan} plan, % (thesis: system CPU wait; ours: the process's "
                         "runqueue + I/O wait, peak)", f"up to {published}", "not run" if plan not in plans
                         else _num(ours, 1), "plan not run" if plan not in plans
                         else difference(ours, published, " points", at_most=True)))
    for plan, published in T["min_worker_cpu_percent"].items():
        # The thesis's unit: Ganglia's CPU % of a machine that held one role; ours: % of the role's host, which
        # every role shares here (the % of one core is in plans.csv beside it).
        ours = min((plans[plan].get(f"worker:{i} cpu % host") or 0.0) for i in range(3)) if plan in plans else None
        rows.append(_row(f"Lowest worker CPU, {plan} plan, % of the host (thesis: % of a machine holding one role; "
                         "here all roles share one host)", f"above {published}",
                         "not run" if ours is None else _num(ours, 1),
                         "plan not run" if ours is None else difference(ours, published, " points", at_least=True)))
    batches = sorted(ov.landcover_batches(folder), key=lambda r: r["batch_size"])
    if len(batches) > 1:
        low, high = batches[0], batches[-1]
        ratio = low["cluster_out_MiB_per_s"] / max(high["cluster_out_MiB_per_s"], 1e-12)
        rows.append(_row(f"Cluster traffic, batch {low['batch_size']} over batch {high['batch_size']} (Fig. 6.5: "
                         "batch 10 over 50 and 200)", f"more than {_num(T['batch_traffic_ratio'])}x", f"{ratio:.2f}x",
                         difference(ratio, T["batch_traffic_ratio"], "x", at_least=True)))
    else:
        rows.append(_row("Cluster traffic, smallest over largest batch (Fig. 6.5)",
                         f"more than {_num(T['batch_traffic_ratio'])}x", "one batch size run", "not run"))
    small = next((r for r in batches if r["batch_size"] == 10), None)
    rows.append(_row("Cluster out-traffic at batch 10, MB/s", f"up to about {_num(T['batch10_cluster_MBps'])}",
                     "batch 10 not run" if small is None else _num(small["cluster_out_MiB_per_s"] * MB_PER_MIB, 3),
                     "not run" if small is None else
                     difference(small["cluster_out_MiB_per_s"] * MB_PER_MIB, T["batch10_cluster_MBps"], " MB/s")))
    return rows


def domst_comparisons(folder: Path) -> list[dict]:
    from jobs import domst_paper as dp
    from jobs import domst_report as dr
    s = ov.summary(folder)
    rows = []
    for r in dp.paper_rows(s):  # Table 1, the overall speedup, the per-watershed speedups and NSE gains
        scale = 100 if r["unit"] == "%" else 1
        diff = difference(None if r["ours"] is None else scale * r["ours"], scale * r["paper"],
                          " percentage points" if r["unit"] == "%" else r["unit"])
        rows.append(_row(f"{r['figure']}. Ours: {r['how']}", dp.fmt(r["paper"], r["unit"]),
                         "not run" if r["ours"] is None else dp.fmt(r["ours"], r["unit"]), diff))
    shares = s.get("shares") or {}
    for key, label in (("singlehead_p_beats_singlehead", "Singlehead(+P) beats Singlehead"),
                       ("domst_beats_both", "Dom-ST beats both")):
        published, ours = dr.PAPER_SHARES[key], shares.get(key)
        number = float(published.rstrip("%")) / 100 if re.fullmatch(r"\d+(\.\d+)?%", published) else None
        diff = difference(None if ours is None else 100 * ours, None if number is None else 100 * number,
                          " percentage points") if number is not None else \
            ("not run" if ours is None else f"ours {ours:.0%} of watersheds; the paper gives no number")
        rows.append(_row(f"{label}, share of watersheds", published,
                         "not run" if ours is None else f"{ours:.0%}", diff))
    median = (s.get("median_nse") or {}).get("domst")
    rows.append(_row("Median test NSE, Dom-ST (reference: NeuralHydrology LSTM, CAMELS-US; not the paper)",
                     _num(dr.REFERENCE_MEDIAN_NSE), _num(median, 3), difference(median, dr.REFERENCE_MEDIAN_NSE)))
    return rows


def spacetime_comparisons(folder: Path) -> list[dict]:
    from jobs import spacetime_report as sr
    s = ov.summary(folder)
    measured, modelled = s.get("measured_growth") or {}, s.get("modelled_growth") or {}
    growth = lambda g, m: "not run" if g.get(m) is None else f"{g[m]:.2f}x"  # noqa: E731
    claim = {"space": "slows down", "depth": "slows down", "spacetime": "keeps its time per step"}
    rows = [_row(f"Time per step, most processes over one, {sr.LABELS[m]} (slide 8; problem per process "
                 f"{sr.SLIDES[m]})", claim[m], f"measured {growth(measured, m)}; MODELLED to "
                 f"{s.get('modelled_max_processes')} processes {growth(modelled, m)}",
                 "the slides give curves, no number") for m in sr.SLIDES if m in measured or m in modelled]
    rows.append(_row("Forward and gradients equal to the undecomposed network (ours: relative, largest over the cells)",
                     "not reported", f"{s.get('max_forward_rel_diff', 0):.2g}, {s.get('max_gradient_rel_diff', 0):.2g}",
                     f"equal within {sr.EQUAL_REL:g}: {s.get('equal_to_undecomposed')}"))
    return rows


COMPARISONS = {"redshift": redshift_comparisons, "landcover": landcover_comparisons, "domst": domst_comparisons,
               "spacetime": spacetime_comparisons}


# ---------------------------------------------------------------- tables per case
def tables(case: str, folder: Path) -> list[tuple[str, list[dict]]]:
    if case == "redshift":
        out = [("Accuracy and loss per epoch, per run and worker", ov.redshift_workers(folder))]
        out += [(f"Epochs to stable, {n} samples (stable_{n}.csv)", rows)
                for n, rows in ov.redshift_stable(folder).items()]
        return out + [("Updates at the parameter server", ov.redshift_updates(folder))]
    if case == "landcover":
        return [("Plans: time per epoch, final loss and accuracy", ov.landcover_plans(folder)),
                ("Traffic, CPU, wait and memory per role and plan", ov.landcover_roles(folder)),
                ("Traffic per batch size (default plan)", ov.landcover_batches(folder))]
    if case == "spacetime":
        return [("Equality with the undecomposed network, loss beside serial training", ov.spacetime_checks(folder)),
                ("MGRIT error and residual per iteration", ov.spacetime_convergence(folder)),
                ("Weak scaling, measured", ov.spacetime_weak(folder)),
                ("Time, bytes and halo bytes (measured vs analytic) per cell", ov.spacetime_traffic(folder)),
                ("MODELLED weak scaling to 2^N processes (not measured)", ov.spacetime_modelled(folder))]
    return [("Median and mean test NSE per approach", ov.domst_medians(folder)),
            ("Test NSE per watershed", ov.domst_nse(folder)),
            ("S vs IP-D training time and speedup, the paper's Table 1 beside ours", ov.domst_times(folder)),
            ("Dom-ST's speedup and NSE gain over Singlehead(+P) per watershed", ov.domst_gains(folder)),
            ("Ablation: share of watersheds each approach beats, median NSE", ov.domst_ablation(folder))]


# ---------------------------------------------------------------- Markdown (the jobs' report.md) to HTML
def _inline(text: str) -> str:
    text = html.escape(text, quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


def png_tag(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)} ({html.escape(path.name)})</figcaption></figure>")


def markdown_html(text: str, folder: Path, embedded: set[str]) -> str:
    """The Markdown the jobs write (headings, pipe tables, lists, paragraphs, images); images are embedded
    from `folder` and their names added to `embedded`."""
    out: list[str] = []
    block: list[str] = []
    kind = None

    def flush():
        nonlocal kind
        if kind == "p":
            out.append(f"<p>{_inline(' '.join(block))}</p>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in block) + "</ul>")
        elif kind == "table":
            rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in block
                    if not re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", line.strip())]
            head = "".join(f"<th>{_inline(c)}</th>" for c in rows[0])
            body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
            out.append(f'<table class="data"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')
        block.clear()
        kind = None

    for line in text.splitlines():
        image = re.fullmatch(r"!\[([^\]]*)\]\(([^)]+)\)\s*", line.strip())
        heading = re.match(r"(#{1,4})\s+(.*)", line)
        new_kind = ("table" if line.lstrip().startswith("|") else "ul" if line.startswith("- ") else
                    None if not line.strip() or image or heading else "p")
        if new_kind != kind or new_kind is None:
            flush()
        if image:
            path = folder / image.group(2)
            if path.is_file():
                out.append(png_tag(path, image.group(1)))
                embedded.add(path.name)
            else:
                out.append(f"<p><em>figure {html.escape(image.group(2))} is missing</em></p>")
        elif heading:
            level = min(len(heading.group(1)) + 2, 6)  # the report's own h1/h2 come first
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif new_kind:
            kind = new_kind
            block.append(line[2:] if kind == "ul" else line)
    flush()
    return "\n".join(out)


# ---------------------------------------------------------------- the page
STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table.data{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.85em}
table.data th,table.data td{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}
table.data th{background:#f2f2f2} figure{margin:1em 0} img{max-width:100%}
figcaption{font-size:.85em;color:#555} .absent{color:#a60} .failed{color:#b00} code{background:#f4f4f4}"""


def case_section(case: str, folder: Path | None, root: Path) -> str:
    parts = [f'<h2 id="{case}">{html.escape(TITLES[case])}</h2>']
    if folder is None:
        parts.append(f'<p class="absent">Absent: no outputs under {html.escape(str(root / case))} '
                     f"(no summary.json; the case study was not run there).</p>")
        return "\n".join(parts)
    s = ov.summary(folder)
    parts.append(f"<p>Status <strong>{html.escape(str(s.get('status')))}</strong>, preset "
                 f"{html.escape(str(s.get('preset')))}, {_num(s.get('wall_time_s'), 0)} s; outputs in "
                 f"<code>{html.escape(str(folder))}</code>.</p>")
    if s.get("status") != "ok":
        parts.append(f'<p class="failed">The run failed: {html.escape(str(s.get("error")))}</p>')
    sections = [("Published numbers beside ours", lambda: html_rows(COMPARISONS[case](folder)))]
    sections += [(title, lambda rows=rows: ov.html_table(rows)) for title, rows in _safe_tables(case, folder)]
    for title, render in sections:
        parts += [f"<h3>{html.escape(title)}</h3>", _guarded(render, title)]
    embedded: set[str] = set()
    if (folder / "report.md").is_file():
        parts += ["<h3>The job's report (report.md)</h3>",
                  markdown_html((folder / "report.md").read_text(encoding="utf-8"), folder, embedded)]
    rest = [p for p in ov.figures(folder) if p.name not in embedded]
    if rest:
        parts.append("<h3>Other figures</h3>")
        parts += [png_tag(p, p.stem.replace("_", " ")) for p in rest]
    problems = check(case, folder)
    parts.append("<h3>Output check</h3>")
    parts.append("<p>The folder matches docs/OUTPUTS.md.</p>" if not problems else
                 "<ul>" + "".join(f"<li>{html.escape(p)}</li>" for p in problems) + "</ul>")
    return "\n".join(parts)


def html_rows(rows: list[dict]) -> str:
    return ov.html_table(rows, ["finding", "published", "ours", "difference"])


def _safe_tables(case: str, folder: Path) -> list[tuple[str, list[dict]]]:
    try:
        return tables(case, folder)
    except (OSError, KeyError, ValueError) as exc:  # a failed or partial run: say what is missing
        return [(f"Tables (incomplete: {type(exc).__name__}: {exc})", [])]


def _guarded(render, title: str) -> str:
    try:
        return render()
    except (OSError, KeyError, ValueError, TypeError, ZeroDivisionError) as exc:
        return (f'<p class="failed">{html.escape(title)}: cannot be built from these outputs '
                f"({html.escape(repr(exc))})</p>")


def build(root: str | Path, shown: str | None = None) -> str:
    """The whole report as one HTML string; `shown`: the root's name on the page (default: its path)."""
    base = Path(root)
    found = ov.present(base)
    overview = [{"case study": case, "outputs": "absent" if folder is None else str(folder),
                 "status": "not run" if folder is None else ov.summary(folder).get("status")}
                for case, folder in found.items()]
    body = ["<h1>Results of the case studies</h1>",
            f"<p>Output root <code>{html.escape(shown or str(base.resolve()))}</code>, report built "
            f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}. Published numbers: thesis and papers via "
            "REFERENCE_NUMBERS.md; our data is simulated and smaller, so compare the shape of each finding "
            "(which way it goes, and by how much) rather than absolute values.</p>",
            ov.html_table(overview)]
    body += [case_section(case, folder, base) for case, folder in found.items()]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Case study results</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.outputs_report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", nargs="?", default=None, help="output root (path or URI) holding "
                        "redshift/, landcover/, domst/; default: $SCIDL_OUTPUTS or outputs")
    parser.add_argument("--html", help="where to write the report; default: <root>/report.html")
    args = parser.parse_args(argv)
    root_uri = args.root or ov.default_root()
    from rdd_io import storage
    with tempfile.TemporaryDirectory(prefix="scidl-outputs-") as copy:  # an hdfs:// root is read from a copy
        root = ov.local_root(root_uri, copy_to=copy)
        page = build(root, shown=None if storage.is_local(root_uri) else root_uri)
        found = [c for c, f in ov.present(root).items() if f is not None]
    target = args.html or (str(root / "report.html") if storage.is_local(root_uri)
                           else storage.join(root_uri, "report.html"))
    if storage.is_local(target):
        from jobs.output_files import write_text
        write_text(page, str(storage.local_path(target)))
    else:
        storage.write_text(target, page)
    absent = [c for c in CASES if c not in found]
    print(f"report: {target} ({len(page) // 1024} KiB; case studies: {', '.join(found) or 'none'}"
          + (f"; absent: {', '.join(absent)}" if absent else "") + ")")
    if not found:
        print(f"warning: no case study outputs under {root_uri} (expected <root>/<case>/summary.json)",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
