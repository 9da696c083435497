# The two commands of README.md: `make demo` (set up + run on the embedded mini-cluster) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= outputs

.PHONY: demo report test test-unit test-cluster check-prereqs clean

demo: $(VENV)/.installed
	$(BIN)/python jobs/redshift.py --preset tiny --output $(OUT)/redshift
	$(BIN)/python jobs/landcover.py --preset tiny --output $(OUT)/landcover
	$(BIN)/python jobs/domst.py --preset tiny --output $(OUT)/domst
	@echo "All three case studies are in $(OUT)/. One HTML report of them all: make report"

# One HTML file with every case study's tables and figures, published numbers beside ours (README).
report: $(VENV)/.installed
	$(BIN)/python -m jobs.outputs_report $(OUT) --html $(OUT)/report.html

test: $(VENV)/.installed
	$(BIN)/python -m pytest

test-unit: $(VENV)/.installed
	$(BIN)/python -m pytest -m unit

test-cluster: $(VENV)/.installed
	$(BIN)/python -m pytest -m cluster

check-prereqs:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null || { \
	  echo "error: Python 3.11 or newer is needed (found: $$($(PYTHON) --version 2>&1)). Set PYTHON=/path/to/python3.11."; exit 1; }
	@command -v java >/dev/null 2>&1 || { \
	  echo "error: Java was not found. Spark 4 needs Java 17 or newer:"; \
	  echo "       Debian/Ubuntu: sudo apt-get install openjdk-17-jre-headless;  macOS: brew install openjdk@17"; exit 1; }
	@v=$$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1); \
	  [ "$${v:-0}" -ge 17 ] || { echo "error: Spark 4 needs Java 17 or newer; \`java -version\` says $$v."; exit 1; }

$(VENV)/.installed: setup.py | check-prereqs
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[cpu,test]'
	touch $@

clean:
	rm -rf $(VENV) .minicluster *.egg-info
