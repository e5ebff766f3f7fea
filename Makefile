# lanepaint — one command each: `make demo`, `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo-out
PIPELINE ?= filter-dataset
export SAM2_BUILD_CUDA := 0

.PHONY: install test lint demo compile check-compiled clean run-local

install: $(STAMP)

# Re-runs only when the dependency pins change. torch comes first and pinned so that no
# resolver pulls another torch build; sam2 builds against it without isolation.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1 setuptools wheel
	$(PIP) install -q -c constraints.txt --no-build-isolation sam2==1.1.0
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

test: install
	$(VENV)/bin/ruff check lanepaint components pipelines bench tests
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check lanepaint components pipelines bench tests

compile: install
	$(PY) -m pipelines.compile

check-compiled: install
	$(PY) -m pipelines.compile --check

demo: install
	$(PY) -m pipelines.demo --out $(DEMO_OUT)

clean:
	rm -rf $(VENV) $(DEMO_OUT)

run-local: install
	$(PY) -m pipelines.local $(PIPELINE) $(if $(PARAMS),--params $(PARAMS))
