"""Shared test settings: TensorFlow stays quiet and single-threaded on the 2-core machines."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


# `make test` runs the cluster tests on two processes (`-n 2 --dist loadscope`), each with its own mini-cluster
# and HDFS for its session. The files below read the session's tiny runs of the case studies: they form one
# scope, so each run is made once in one process; every other file is a scope of its own (its module fixtures
# made once). tests/cluster/conftest.py refuses a test that reads a tiny run from a file not listed here.
TINY_RUN_FILES = frozenset({"test_domst_job.py", "test_hdfs_jobs.py", "test_landcover_job.py", "test_outputs.py",
                            "test_redshift_job.py", "test_security.py", "test_spacetime_job.py"})


def pytest_xdist_make_scheduler(config, log):
    if config.getoption("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class TinyRunsTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "tiny runs" if path.rsplit("/", 1)[-1] in TINY_RUN_FILES else path

    return TinyRunsTogether(config, log)
