# `make test` and `make demo` do all the set-up on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
# pip, not uv/poetry: torch and torchvision are found on this machine's disk.
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
STAMP := $(VENV)/.tlzoo-installed

.PHONY: test demo seed001 finetune install bench clean browser

$(STAMP): pyproject.toml examples/tlzoo-plugin-example/pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) 'torch>=2.6' 'torchvision>=0.21'
	$(PIP) -e '.[dev,tensorboard,serve]'
	$(PIP) -e examples/tlzoo-plugin-example
	@# builds the listing cache once (timm and torchvision imported), so later listings answer in under a second
	$(VENV)/bin/tlzoo list backbones > /dev/null
	touch $@

install: $(STAMP)

# headless Chromium for the report's browser test (Debian's package; the test skips, saying why, without it)
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		{ apt-get update -qq && apt-get install -y -qq chromium; } >/dev/null 2>&1; } || \
		echo "make: chromium not installed; tests/test_report_browser.py will skip"

test: $(STAMP) browser
	$(PY) -m pytest

# trains into runs/demo, then scores its best model on the flowers12 test split
demo: $(STAMP)
	rm -rf runs/demo
	$(VENV)/bin/tlzoo run examples/flowers12.json --output runs/demo
	@echo "test accuracy of runs/demo/best.safetensors on flowers12/test:"
	$(VENV)/bin/tlzoo evaluate runs/demo
	@echo "report (curves, confusion matrix, per-class table, top losses): $(CURDIR)/runs/demo/report.html"

# seed 001's recipe on txt lists written for flowers12
seed001: $(STAMP)
	$(PY) examples/make_txt_lists.py ../shared/datasets/flowers12 examples/lists/flowers12
	$(VENV)/bin/tlzoo run examples/seed001.json

finetune: $(STAMP)
	$(VENV)/bin/tlzoo run examples/finetune.json

bench: $(STAMP)
	$(PY) benchmarks/bench.py

clean:
	rm -rf $(VENV) build *.egg-info runs
