"""Writing output files that a notebook opens: each one atomically (temporary name, then rename), so a
reader never sees half a file and a failed run leaves the previous version in place."""
from __future__ import annotations

import csv
import json
import os
import tempfile
from contextlib import contextmanager


@contextmanager
def atomic(path: str):
    """Yield a temporary name beside path; rename it to path only when the block succeeds."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, mode=0o700, exist_ok=True)  # a folder made here is its owner's only
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    os.close(fd)
    try:  # mkstemp's 0600 stays: an output is readable only by the user who made it
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def cell_text(value, digits: int = 6) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def write_text(text: str, path: str) -> None:
    with atomic(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)


def markdown_table(rows: list[dict], number: str = "{:.3f}") -> str:
    """A Markdown table of `rows` (columns from the first row); floats as `number`, None and absent as '-'."""
    if not rows:
        return ""
    keys = list(rows[0])
    cell = lambda v: "-" if v is None else number.format(v) if isinstance(v, float) else str(v)  # noqa: E731
    return "\n".join(["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
                      + ["| " + " | ".join(cell(r.get(k)) for k in keys) + " |" for r in rows]) + "\n"


def write_csv(rows: list[dict], path: str) -> None:
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with atomic(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: cell_text(row.get(k), 10) for k in fields})


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display on cluster nodes or in CI)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_png(fig, path: str) -> str:
    try:
        with atomic(path) as tmp:
            fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight")
    finally:
        pyplot().close(fig)
    return path
