# touchline: the two set-up commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed

.PHONY: demo test bench install java browser lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[spark,test]'
	touch $(STAMP)

install: $(STAMP) java browser

# pyspark 4.0 needs a Java 17 runtime; install it from Debian when missing.
java:
	@command -v java >/dev/null 2>&1 || { \
	  echo "installing Java 17 (openjdk-17-jre-headless) for the Spark engine"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null); }

# Browser tests drive Debian's chromium through Playwright (no browser downloads possible).
browser:
	@test -x /usr/bin/chromium || { \
	  echo "installing Debian chromium for the browser tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null); }

demo: install
	$(VENV)/bin/touchline demo

# two workers (tests/conftest.py hands each test to a free worker, keeping a file together
# when it shares a module-scoped fixture). Three were tried: 21.8 min against 20.9 min, the
# long Spark prepare tests only got slower sharing the cores.
test: install
	$(PY) -m pytest -q -n 2 --dist loadgroup --durations=20

bench: install
	$(PY) benchmarks/run.py

lint: install
	$(VENV)/bin/ruff check touchline tests benchmarks

clean:
	rm -rf $(VENV) touchline.duckdb touchline.duckdb.sessions demo-output .pytest_cache
