# The two set-up commands: `make demo` and `make test`. Both build .venv from scratch if needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch first, pinned: on these machines torch==2.13.0 is a CPU build on local disk; any other
# spec may pull a multi-GB CUDA build. --no-build-isolation so the C++ build sees this torch.
STAMP := $(VENV)/.installed

.PHONY: install haproxy demo serve test bench lint charts clean

$(STAMP): pyproject.toml setup.py $(wildcard mmhost/csrc/*.cpp mmhost/csrc/*.h)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q --no-build-isolation -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/mmhost demo

# the demo's store (written by make demo), served as the README's curl examples expect
SERVE := $(BIN)/mmhost serve --store demo-store/models --preprocessor demo-store/preprocessor.tar.gz
serve: $(STAMP)
	@test -d demo-store/models || { echo "run make demo first (it writes demo-store/)"; exit 2; }
	$(SERVE)

# the fleet tests and benchmark run a real HAProxy: Debian's package, installed where missing
haproxy:
	@command -v haproxy >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null) \
	      || echo "make: haproxy could not be installed: the fleet tests skip"; \
	  else echo "make: no haproxy here (apt-get install haproxy, as root): the fleet tests skip"; fi; }

test: $(STAMP) haproxy
	TRITON_INTERPRET=1 $(BIN)/python -m pytest -q

bench: $(STAMP) haproxy
	mkdir -p .benchmarks
	$(BIN)/python -m pytest benchmarks -o python_files='bench_*.py' -q \
		--benchmark-columns=median,ops,rounds --benchmark-sort=name --benchmark-json=.benchmarks/last.json
	$(BIN)/python benchmarks/report.py .benchmarks/last.json

# the cache experiment (N = 200 models): the CSV and the two charts the README shows
charts: $(STAMP)
	$(BIN)/python -m mmhost.cli experiment cache --out docs/experiment

lint: $(STAMP)
	$(BIN)/ruff check mmhost tests benchmarks
	$(BIN)/ruff format --check mmhost tests benchmarks
	$(BIN)/mypy mmhost
	$(BIN)/mypy --strict --follow-imports=silent mmhost/types.py mmhost/cache mmhost/engine

clean:
	rm -rf $(VENV) build *.egg-info mmhost/_C*.so
