# The two commands of README.md: `make demo` (set up + run on the embedded mini-cluster) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= outputs

.PHONY: demo demo-hdfs report test test-unit test-cluster test-hdfs hdfs-jars env-archive check-prereqs clean

demo: $(VENV)/.installed
	$(BIN)/python jobs/redshift.py --preset tiny --output $(OUT)/redshift
	$(BIN)/python jobs/landcover.py --preset tiny --output $(OUT)/landcover
	$(BIN)/python jobs/domst.py --preset tiny --output $(OUT)/domst
	$(BIN)/python jobs/spacetime.py --preset tiny --output $(OUT)/spacetime
	@echo "All four case studies are in $(OUT)/. One HTML report of them all: make report"

# The four case studies with input and outputs on a real HDFS (NameNode + 2 DataNodes from Hadoop's
# jars, fetched by Maven) beside a Spark mini-cluster; both are stopped by pid at the end, also on failure.
HDFS_RUN := .minicluster/demo-hdfs
demo-hdfs: $(VENV)/.installed hdfs-jars
	@trap '$(BIN)/python -m distributed.minicluster down --run-dir $(HDFS_RUN)' EXIT; \
	$(BIN)/python -m distributed.minicluster up --hdfs --workers 5 --run-dir $(HDFS_RUN) && \
	master=$$($(BIN)/python -c 'import json,sys; print(json.load(open(sys.argv[1]))["master_url"])' $(HDFS_RUN)/state.json) && \
	hdfs=$$($(BIN)/python -c 'import json,sys; print(json.load(open(sys.argv[1]))["uri"])' $(HDFS_RUN)/hdfs/state.json) && \
	for case in redshift landcover domst spacetime; do \
	  $(BIN)/python jobs/$$case.py --preset tiny --master $$master --set cluster.run_dir=$(HDFS_RUN) \
	    --output $$hdfs/outputs/$$case || exit 1; \
	done && \
	$(BIN)/python -m jobs.outputs_report $$hdfs/outputs --html $(OUT)/report-hdfs.html && \
	echo "All four case studies ran on $$hdfs/outputs; the report read from there: $(OUT)/report-hdfs.html"

# One HTML file with every case study's tables and figures, published numbers beside ours (README).
report: $(VENV)/.installed
	$(BIN)/python -m jobs.outputs_report $(OUT) --html $(OUT)/report.html

# The unit tests on two processes (one file per process at a time: a file's fixtures stay in one process),
# then everything else on two more: each has its own mini-cluster and HDFS for its session, the tests that read
# the tiny runs share one process and the others go file by file (tests/conftest.py); the jobs wait on
# JVMs, sockets and timeouts for about a third of their time, which the other process fills. First the linter
# (ruff.toml): a finding fails the run before any test. The slowest tests are listed at the end so the suite's
# time (CI allows 40 min on 2 cores) can be watched.
test: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m unit -n 2 --dist loadfile --durations=10
	$(BIN)/python -m pytest -m "not unit" -n 2 --dist loadscope --durations=30

test-unit: $(VENV)/.installed
	$(BIN)/python -m pytest -m unit

test-cluster: $(VENV)/.installed
	$(BIN)/python -m pytest -m cluster

test-hdfs: $(VENV)/.installed hdfs-jars
	$(BIN)/python -m pytest -m hdfs

# The executors' Python environment for a cluster whose nodes have none of the project installed: the package
# with [cpu], packed by venv-pack (README, "On a real standalone cluster"); jobs ship it with
# --set cluster.python_archive=dist/scidl-env.tar.gz.
env-archive: $(VENV)/.installed
	$(BIN)/python -m distributed.env_archive --output dist/scidl-env.tar.gz

# Apache Hadoop's jars for the HDFS daemons, by Maven from hdfs/pom.xml into hdfs/jars/ (once).
hdfs-jars: $(VENV)/.installed
	$(BIN)/python -m distributed.hdfs_cluster fetch

check-prereqs:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null || { \
	  echo "error: Python 3.11 or newer is needed (found: $$($(PYTHON) --version 2>&1)). Set PYTHON=/path/to/python3.11."; exit 1; }
	@command -v java >/dev/null 2>&1 || { \
	  echo "error: Java was not found. Spark 4 needs Java 17 or newer:"; \
	  echo "       Debian/Ubuntu: sudo apt-get install openjdk-17-jre-headless;  macOS: brew install openjdk@17"; exit 1; }
	@v=$$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1); \
	  [ "$${v:-0}" -ge 17 ] || { echo "error: Spark 4 needs Java 17 or newer; \`java -version\` says $$v."; exit 1; }
	@command -v mvn >/dev/null 2>&1 || { \
	  if [ -n "$$CI" ]; then level=error; else level=note; fi; \
	  echo "$$level: Maven (mvn) was not found. It fetches Apache Hadoop's jars for the HDFS tests and make demo-hdfs:"; \
	  echo "       Debian/Ubuntu: sudo apt-get install maven;  macOS: brew install maven"; \
	  if [ -n "$$CI" ]; then exit 1; else echo "       Without it the HDFS tests are skipped; file:// runs need nothing more."; fi; }

$(VENV)/.installed: setup.py | check-prereqs
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[cpu,test]'
	touch $@

clean:
	rm -rf $(VENV) .minicluster *.egg-info
