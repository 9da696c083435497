"""What a run may do to the folder its --output names, decided before anything is written.

A job deletes and rewrites only what it makes. So an --output that holds something else (files of
the user, another case study's run) is refused unless the user says --overwrite; a symbolic link at
or under it is refused always (nothing is written or deleted through one); an earlier run of the same
case study is replaced, and the run says so, naming its config.yaml.
"""
from __future__ import annotations

import os

import yaml

from conf import ConfigError
from rdd_io import storage


def _links_under(uri: str) -> list[str]:
    """Symbolic links at or below a local folder (not followed)."""
    root = storage.local_path(uri)
    if root.is_symlink():
        return [str(root)]
    found = []
    for folder, dirs, files in os.walk(root):
        found += [os.path.join(folder, n) for n in dirs + files if os.path.islink(os.path.join(folder, n))]
    return found


def earlier_case(output: str) -> str | None:
    """The case study whose run left config.yaml (or, a run that failed before writing it, summary.json)
    in `output`; None if there is neither, or it is not a run's."""
    for name in ("config.yaml", "summary.json"):  # JSON is YAML too
        uri = storage.join(output, name)
        if not storage.exists(uri):
            continue
        try:
            doc = yaml.safe_load(storage.read_text(uri))
        except (yaml.YAMLError, UnicodeDecodeError):
            return None
        return doc.get("case") if isinstance(doc, dict) else None
    return None


def check_output(output: str, case: str, resume: bool, overwrite: bool) -> str | None:
    """Raise ConfigError for an --output this run must not touch; return a line to print when the run
    replaces something there, else None."""
    if storage.is_local(output):
        links = _links_under(output) if storage.local_path(output).exists() or storage.local_path(output).is_symlink() \
            else []
        if links:
            raise ConfigError(f"--output {output}: {links[0]} is a symbolic link; a run neither writes nor deletes "
                              "through one. Use a folder without links.")
    if not storage.list_names(output):
        return None
    previous = earlier_case(output)
    if resume or previous == case:
        return None if resume else (f"{output} holds an earlier {case} run; its outputs and its config.yaml "
                                    "are replaced by this run's")
    if overwrite:
        return f"--overwrite: {output} is not an earlier {case} run; files this run writes replace theirs there"
    what = f"a {previous} run" if previous else "files that no earlier run of this job wrote"
    raise ConfigError(f"--output {output} is not empty and holds {what}; a run deletes and rewrites its "
                      f"folders there. Choose an empty or new folder, or pass --overwrite to write into it anyway.")
