"""docker-compose.yml and the Dockerfile must agree with conf/cluster.yaml.

The embedded mini-cluster is built from cluster.yaml; the compose file is written by hand. These
tests read both files and compare, so a port, worker count or resource changed on one side only
fails here instead of on a user's machine.
"""

import re
import shlex
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
CLUSTER_FILE = ROOT / "conf" / "cluster.yaml"
DOCKERFILE = ROOT / "Dockerfile"

MASTER = "spark-master"
WORKER_NAME = re.compile(r"^spark-worker-(\d+)$")
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
# ${NAME:?message}: compose refuses to start when NAME is unset or empty.
REQUIRED_VAR = re.compile(r"^\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*):\?[^}]+\}$")


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def cluster():
    return yaml.safe_load(CLUSTER_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose):
    return compose["services"]


@pytest.fixture(scope="module")
def dockerfile():
    return DOCKERFILE.read_text()


def workers_by_index(services):
    """{1: service, 2: service, ...} for every spark-worker-N service."""
    found = {}
    for name, service in services.items():
        match = WORKER_NAME.match(name)
        if match:
            found[int(match.group(1))] = service
    return found


def spark_services(services):
    """Every service that runs a Spark JVM: master, workers and the driver-side Jupyter."""
    names = [MASTER, "jupyter", *(n for n in services if WORKER_NAME.match(n))]
    return {n: services[n] for n in names}


def command_args(service):
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def option(args, flag):
    """Value following `flag` in an argument list; fails the test when the flag is absent."""
    assert flag in args, f"{flag} missing from command {args}"
    index = args.index(flag)
    assert index + 1 < len(args), f"{flag} has no value in command {args}"
    return args[index + 1]


def published_ports(service):
    """{container port: host port} from the short ("[ip:]host:container") or long port syntax."""
    ports = {}
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports[int(entry["target"])] = int(entry["published"])
        else:
            parts = str(entry).split("/")[0].split(":")
            assert len(parts) >= 2, f"port {entry!r} is not published on a fixed host port"
            ports[int(parts[-1])] = int(parts[-2])
    return ports


def environment(service):
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return env


def test_worker_services_match_worker_count(services, cluster):
    workers = workers_by_index(services)
    assert len(workers) == cluster["workers"]
    assert sorted(workers) == list(range(1, cluster["workers"] + 1))


def test_master_command_and_ports(services, cluster):
    master = services[MASTER]
    args = command_args(master)
    assert MASTER_CLASS in args
    assert option(args, "--host") == MASTER
    port = int(option(args, "--port"))
    ui_port = int(option(args, "--webui-port"))
    assert port == cluster["master_port"]
    assert ui_port == cluster["master_ui_port"]
    published = published_ports(master)
    assert published.get(port) == cluster["master_port"]
    assert published.get(ui_port) == cluster["master_ui_port"]


def test_each_worker_ui_port_follows_cluster(services, cluster):
    for index, worker in workers_by_index(services).items():
        expected = cluster["worker_ui_port"] + index - 1
        ui_port = int(option(command_args(worker), "--webui-port"))
        assert ui_port == expected, f"spark-worker-{index}"
        assert published_ports(worker).get(ui_port) == expected, f"spark-worker-{index}"


def test_workers_join_the_master_with_cluster_resources(services, cluster):
    master_url = f"spark://{MASTER}:{cluster['master_port']}"
    for index, worker in workers_by_index(services).items():
        args = command_args(worker)
        assert WORKER_CLASS in args, f"spark-worker-{index}"
        assert args[args.index(WORKER_CLASS) + 1] == master_url, f"spark-worker-{index}"
        assert int(option(args, "--cores")) == cluster["worker_cores"], f"spark-worker-{index}"
        assert option(args, "--memory") == str(cluster["worker_memory"]), f"spark-worker-{index}"
        assert MASTER in worker.get("depends_on", {}), f"spark-worker-{index}"


def test_host_ports_are_not_shared(services):
    seen = {}
    for name, service in services.items():
        for host_port in published_ports(service).values():
            assert host_port not in seen, f"{name} and {seen.get(host_port)} both publish {host_port}"
            seen[host_port] = name


def test_default_fs_points_at_the_namenode_service(services, cluster):
    uri = urlparse(cluster["default_fs"])
    assert uri.scheme == "hdfs"
    assert uri.hostname in services, f"no service named {uri.hostname!r}"
    namenode = services[uri.hostname]
    assert command_args(namenode) == ["namenode"]
    assert published_ports(namenode).get(uri.port) == uri.port
    # The namenode writes this URI into core-site.xml; Spark services pass it as fs.defaultFS.
    for name, service in {uri.hostname: namenode, **spark_services(services)}.items():
        assert environment(service).get("HDFS_DEFAULT_FS") == cluster["default_fs"], name


def test_datanode_registers_with_the_namenode(services, cluster):
    namenode = urlparse(cluster["default_fs"]).hostname
    datanode = services["datanode"]
    assert command_args(datanode) == ["datanode"]
    assert namenode in datanode.get("depends_on", {})
    assert environment(datanode).get("HDFS_DEFAULT_FS") == cluster["default_fs"]


def test_hdfs_data_lives_in_named_volumes(compose, services):
    declared = set(compose.get("volumes") or {})
    for name in ("namenode", "datanode"):
        sources = [str(v).split(":")[0] for v in services[name].get("volumes", [])]
        assert any(s in declared for s in sources), f"{name} has no named volume among {sources}"


def test_every_service_runs_one_image_built_from_the_dockerfile(services):
    images = {name: service.get("image") for name, service in services.items()}
    assert len(set(images.values())) == 1, images
    assert None not in images.values(), images
    for name, service in services.items():
        build = service.get("build")
        assert build is not None, f"{name} has no build section"
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        assert (ROOT / context / dockerfile).resolve() == DOCKERFILE, name


def test_spark_services_require_an_auth_secret(services):
    for name, service in spark_services(services).items():
        secret = str(environment(service).get("SPARK_AUTH_SECRET", ""))
        match = REQUIRED_VAR.match(secret)
        assert match and match.group("name") == "SPARK_AUTH_SECRET", f"{name}: {secret!r}"
        assert service.get("entrypoint") == ["spark-entrypoint.sh"], name


def test_spark_entrypoint_turns_authentication_on():
    script = (ROOT / "docker" / "spark-entrypoint.sh").read_text()
    settings = dict(re.findall(r'^\s*echo "(spark\.[\w.]+) ([^"]*)"\s*$', script, re.MULTILINE))
    assert settings.get("spark.authenticate") == "true"
    assert settings.get("spark.authenticate.secret") == "$secret"
    assert settings.get("spark.master.rest.enabled") == "false"
    assert settings.get("spark.network.crypto.enabled") == "true"


def test_secrets_are_not_baked_into_the_image(dockerfile):
    for word in ("SPARK_AUTH_SECRET", "spark.authenticate.secret", "JUPYTER_TOKEN"):
        assert word not in dockerfile


def test_jupyter_requires_a_token_and_mounts_outputs(services):
    jupyter = services["jupyter"]
    token = str(environment(jupyter).get("JUPYTER_TOKEN", ""))
    match = REQUIRED_VAR.match(token)
    assert match and match.group("name") == "JUPYTER_TOKEN", token
    assert published_ports(jupyter).get(8888) == 8888
    targets = {str(v).split(":")[1] for v in jupyter.get("volumes", [])}
    assert {"/opt/app/notebooks", "/opt/app/outputs"} <= targets


def test_entrypoint_scripts_are_shipped_in_the_image(services, dockerfile):
    for name, service in services.items():
        for script in service.get("entrypoint", []):
            assert (ROOT / "docker" / script).is_file(), f"{name}: docker/{script} missing"
            assert f"docker/{script}" in dockerfile, f"{name}: Dockerfile does not copy {script}"


def test_services_have_healthchecks(services):
    for name, service in services.items():
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), name


def test_dockerfile_installs_python_311_and_java_17(dockerfile):
    base = re.search(r"^FROM\s+(\S+)", dockerfile, re.MULTILINE)
    assert base and re.fullmatch(r"python:3\.11(\.\d+)?-slim-bookworm", base.group(1)), base
    installs = re.findall(r"apt-get install[^\n]*", dockerfile)
    assert any("openjdk-17-jre-headless" in line for line in installs), installs
    assert re.search(r"^ENV JAVA_HOME=", dockerfile, re.MULTILINE)
    spark_home = re.search(r"SPARK_HOME=(\S+)", dockerfile)
    assert spark_home and "python3.11/site-packages/pyspark" in spark_home.group(1)


def test_dockerfile_runs_services_unprivileged(dockerfile):
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")


def test_image_installs_the_tensorflow_extra_of_the_package(dockerfile):
    # Executors train, so the package must be installed with an extra that brings TensorFlow.
    extras = re.search(r"^ARG APP_EXTRAS=(\S+)", dockerfile, re.MULTILINE)
    assert extras, "Dockerfile has no APP_EXTRAS build argument"
    assert '"/opt/app[${APP_EXTRAS}]"' in dockerfile
    setup_text = (ROOT / "setup.py").read_text()
    declared = re.search(rf'"{re.escape(extras.group(1))}"\s*:\s*\[([^\]]*)\]', setup_text)
    assert declared, f"setup.py declares no extra named {extras.group(1)!r}"
    assert "tensorflow" in declared.group(1)
