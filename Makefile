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

.PHONY: install browser test lint demo compile check-compiled clean run-local mutation reference \
	images-local

install: $(STAMP)

# Re-runs only when the dependency pins change. torch comes first and pinned so that no
# resolver pulls another torch build; sam2 builds against it without isolation.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1 setuptools wheel
	$(PIP) install -q -c constraints.txt --no-build-isolation sam2==1.1.0
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The HTML report is checked in a real headless browser: Debian's chromium (root only).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; } || \
	  echo "warning: chromium missing; the report browser test will be skipped"

# The suite runs with every image built here (images/local.py: starts a container engine if
# none runs, installing Debian's docker.io as root, and stops it after), so
# tests/test_containers.py runs each stage's compiled component in its image. Without root or
# an engine it warns and the suite runs with those tests skipped (CI=true: an error).
test: install browser
	$(VENV)/bin/ruff check lanepaint components pipelines bench tests images
	$(PY) images/local.py run -- $(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check lanepaint components pipelines bench tests images

compile: install
	$(PY) -m pipelines.compile
	$(PY) -m pipelines.reference

# docs/reference/*.md from the stage Configs, the CLI parser, the compiled pipelines and
# docs/reference/_parts/ (tests/test_reference.py fails when a page is stale).
reference: install
	$(PY) -m pipelines.reference

check-compiled: install
	$(PY) -m pipelines.compile --check

demo: install
	$(PY) -m pipelines.demo --out $(DEMO_OUT) $(if $(MODEL_ROOT),--model-root $(MODEL_ROOT))

clean:
	rm -rf $(VENV) $(DEMO_OUT) mutants

# Mutation testing of the stage kit and lanepaint/io (docs/testing.md; not part of CI, slow):
# mutmut copies lanepaint/ into mutants/, mutates lanepaint/kit and lanepaint/io only and runs
# each mutant against their unit tests ([tool.mutmut] in pyproject.toml). Always a fresh run;
# MUTMUT_JOBS=N sets the parallel workers (default: one per core).
mutation: install
	$(PIP) install -q -c constraints.txt -e '.[dev,mutation]'
	rm -rf mutants
	$(VENV)/bin/mutmut run $(if $(MUTMUT_JOBS),--max-children $(MUTMUT_JOBS))
	$(VENV)/bin/mutmut export-cicd-stats >/dev/null
	@echo "surviving (and otherwise not killed) mutants; see one with: $(VENV)/bin/mutmut show NAME"
	$(VENV)/bin/mutmut results
	@$(PY) -c 'import json; s = json.load(open("mutants/mutmut-cicd-stats.json")); \
	  print("mutation score: {k}/{t} killed ({survived} survived, {timeout} timeouts, " \
	        "{no_tests} not reached by the tests)".format( \
	        k=s["killed"] + s["timeout"] + s["segfault"], t=s["total"] - s["skipped"], **s))'

# RUNNER=docker: every task in its stage image (make images-local first; MOUNTS="dir dir:ro"
# are the folders the tasks read and write, bind-mounted at the same path).
run-local: install
	$(if $(filter docker,$(RUNNER)),LANEPAINT_IMAGE_REGISTRY=localhost/lanepaint) \
	$(PY) -m pipelines.local $(PIPELINE) $(if $(PARAMS),--params $(PARAMS)) \
		$(if $(filter docker,$(RUNNER)),--runner docker --image-tag local \
		$(foreach m,$(MOUNTS),--mount $(m)))

# --- cluster: images, KFP submission (docs/cluster.md) ---------------------------------
# Images are tagged with the git SHA; run-pipeline/upload/schedule compile afresh with
# LANEPAINT_IMAGE_TAG=$(TAG) so what is submitted references exactly those images.
GIT_SHA := $(shell git rev-parse --short=12 HEAD 2>/dev/null)
TAG ?= $(GIT_SHA)
REGISTRY ?=
RELEASE_TAG ?=
SUBMIT = $(if $(REGISTRY),LANEPAINT_IMAGE_REGISTRY=$(REGISTRY)) $(PY) -m pipelines.submit
BUILD_IMAGES = $(PY) images/build.py --tag $(TAG) $(if $(REGISTRY),--registry $(REGISTRY)) \
	$(if $(RELEASE_TAG),--also-tag $(RELEASE_TAG))

.PHONY: images push upload run-pipeline schedule

images: install
	$(BUILD_IMAGES) $(if $(ALLOW_DIRTY),--allow-dirty) $(if $(NO_PUSH),--no-push)

# Every image built here without registry access (stand-in bases, this machine's package
# indexes), tagged localhost/lanepaint/lanepaint-<image>:local, never pushed (images/README.md).
images-local: install
	$(PY) images/local.py build

push: install
	$(BUILD_IMAGES) --push-only

upload: install
	$(SUBMIT) upload --image-tag $(TAG)

run-pipeline: install
	$(SUBMIT) run $(PIPELINE) --image-tag $(TAG) $(if $(PARAMS),--params $(PARAMS)) \
		$(if $(WAIT),--wait) $(if $(TIMEOUT),--timeout $(TIMEOUT))

schedule: install
	$(SUBMIT) schedule $(SCHEDULE_PIPELINE) --image-tag $(TAG) \
		$(if $(PARAMS),--params $(PARAMS)) $(if $(CRON),--cron "$(CRON)") \
		$(if $(REPLACE),--replace)
