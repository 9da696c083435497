"""A tiny Spark job that asks each executor where it runs, as the kernel sees it.

    python tests/cluster/host_facts.py <run dir of a running mini-cluster> <partitions> [<python archive>]

The driver binds the address in SPARK_LOCAL_IP (the bridge's side when the cluster runs on hosts). Each
task reports the address its socket gets towards the master (a UDP socket connected to the master's
address: getsockname, no packet is sent), the inode of its network namespace (/proc/self/ns/net) and
its pid, and which Python runs it (interpreter, prefix, working folder, whether the driver's packages are
importable); the driver adds its own and every executor's address as Spark's scheduler knows it. With a
python archive, it is shipped the way the jobs ship it (`cluster.python_archive`). Prints one JSON object.
"""
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main(run_dir: str, partitions: int, archive: str | None = None) -> None:
    from pyspark.sql import SparkSession

    from jobs.runner import _secret_properties
    from distributed import env_archive
    from distributed.minicluster import security_conf

    state = json.loads((Path(run_dir) / "state.json").read_text())
    master_host = state["master_url"].split("//")[1].rsplit(":", 1)[0]

    def facts(_):
        import importlib.util
        import os
        import socket
        import sys
        import time
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((master_host, 9))
            address = s.getsockname()[0]
        time.sleep(2)  # hold the executor's only core, so that the next task goes to another executor
        yield {"address": address, "netns_inode": os.stat("/proc/self/ns/net").st_ino, "pid": os.getpid(),
               "spark_local_ip": os.environ.get("SPARK_LOCAL_IP"), "executable": sys.executable,
               "prefix": sys.prefix, "cwd": os.getcwd(), "has_yaml": importlib.util.find_spec("yaml") is not None}

    builder = (SparkSession.builder.master(state["master_url"]).appName("scidl-host-facts")
               .config("spark.executor.cores", "1").config("spark.cores.max", str(partitions))
               .config("spark.executor.memory", "512m")
               .config("spark.scheduler.minRegisteredResourcesRatio", "1.0")
               .config("spark.scheduler.maxRegisteredResourcesWaitingTime", "120s")
               .config("spark.ui.enabled", "false"))
    if archive:
        for key, value in env_archive.spark_conf(archive).items():
            builder = builder.config(key, value)
        os.environ["PYSPARK_PYTHON"] = env_archive.EXECUTOR_PYTHON
    with _secret_properties(security_conf(state["secret"])):
        spark = builder.getOrCreate()
    try:
        sc = spark.sparkContext
        tasks = sc.parallelize(range(partitions), partitions).mapPartitions(facts).collect()
        executors = sorted(f"{e.host()}:{e.port()}" for e in sc._jsc.sc().statusTracker().getExecutorInfos())
        print(json.dumps({"tasks": tasks, "executors": executors, "driver_host": sc.getConf().get("spark.driver.host"),
                          "driver_netns_inode": os.stat("/proc/self/ns/net").st_ino}))
    finally:
        spark.stop()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:4])
