# `make test` and `make demo` do all the set-up on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
# pip, not uv/poetry: torch and torchvision are found on this machine's disk.
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
STAMP := $(VENV)/.tlzoo-installed

.PHONY: test demo install bench clean

$(STAMP): pyproject.toml examples/tlzoo-plugin-example/pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) 'torch>=2.6' 'torchvision>=0.21'
	$(PIP) -e '.[dev]'
	$(PIP) -e examples/tlzoo-plugin-example
	touch $@

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

demo: $(STAMP)
	$(VENV)/bin/tlzoo run examples/flowers12.json

bench: $(STAMP)
	$(PY) benchmarks/bench.py

clean:
	rm -rf $(VENV) build *.egg-info runs
