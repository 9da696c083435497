"""The Python environment a job ships to its executors, for nodes that have none of the project installed.

A virtualenv holding the package and its dependencies, packed by venv-pack into one archive that Spark
copies to every executor and unpacks there (`spark.archives=<archive>#environment`); each executor's Python
workers then run `./environment/bin/python` from it. This is Spark's documented way (Python Package
Management, "Using Virtualenv"). venv-pack keeps the base interpreter out of the archive: every node needs
the same Python (3.11) at the path this machine's has (shown by `python -m distributed.env_archive --help`).

    python -m distributed.env_archive                    # dist/scidl-env.tar.gz: the package with [cpu]
    jobs/redshift.py ... --set cluster.python_archive=dist/scidl-env.tar.gz
"""
from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from conf import ConfigError

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
ALIAS = "environment"                              # the folder each executor unpacks the archive into
EXECUTOR_PYTHON = f"./{ALIAS}/bin/python"          # relative to the executor's working folder
SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")     # what Spark unpacks (Utils.unpack)
DEFAULT_OUTPUT = ROOT / "dist" / "scidl-env.tar.gz"


def base_python() -> str:
    """The interpreter a venv made from this one links to: the path every node must have."""
    return os.path.realpath(getattr(sys, "_base_executable", sys.executable))


def spark_conf(archive: str) -> dict[str, str]:
    """The Spark setting that ships `archive` (a local path or a URI every executor can read). The
    executors run EXECUTOR_PYTHON from it once the driver's PYSPARK_PYTHON says so (pyspark reads the
    variable, not spark.pyspark.python, when it starts a context); the driver keeps its own interpreter."""
    parsed = urlparse(archive)
    if not archive or not archive.endswith(SUFFIXES):
        raise ConfigError(f"cluster.python_archive: {archive!r} is not an archive Spark unpacks "
                          f"({', '.join(SUFFIXES)}); build one with `make env-archive`")
    if parsed.scheme in ("", "file"):
        path = Path(os.path.abspath(parsed.path if parsed.scheme else archive))
        if not path.is_file():
            raise ConfigError(f"cluster.python_archive: {path} does not exist; build it with `make env-archive`")
        archive = path.as_uri()
    return {"spark.archives": f"{archive}#{ALIAS}"}


def build(output: Path, installs: list[list[str]], work_dir: Path | None = None) -> Path:
    """Create a virtualenv, run `pip install *args` for each entry of `installs`, pack it to `output`
    (written beside and renamed into place: never half an archive at `output`)."""
    import venv_pack
    output = Path(output).resolve()
    if not output.name.endswith(SUFFIXES):
        raise ValueError(f"{output}: the archive's name must end with one of {', '.join(SUFFIXES)}")
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="scidl-env-", dir=work_dir) as tmp:
        env = Path(tmp) / "env"
        subprocess.run([base_python(), "-m", "venv", *([] if installs else ["--without-pip"]), str(env)], check=True)
        for args in installs:
            log.info("pip install %s", " ".join(args))
            subprocess.run([str(env / "bin" / "python"), "-m", "pip", "install", "--quiet", *args], check=True)
        partial = output.with_name(f".{output.name}.partial")
        partial.unlink(missing_ok=True)
        fmt = "tar.gz" if output.name.endswith((".tar.gz", ".tgz")) else output.suffix.lstrip(".")
        venv_pack.pack(prefix=str(env), output=str(partial), format=fmt, verbose=False)
        os.chmod(partial, 0o600)
        partial.replace(output)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__ + f"\nEvery node needs the base interpreter at {base_python()}.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"default {DEFAULT_OUTPUT}")
    parser.add_argument("--extras", default="cpu", help="the package's extras to install (default cpu)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # Not editable: the archive must hold the package's files, not a link to this checkout.
    out = build(args.output, [[f"{ROOT}[{args.extras}]" if args.extras else str(ROOT)]])
    print(f"{out}: {out.stat().st_size / 2**20:.0f} MiB; ship it with --set cluster.python_archive={out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
