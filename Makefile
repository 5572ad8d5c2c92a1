# onair — the two commands that matter: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-12)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get
# The ffmpeg CLI is the tests' real publisher and prober; GStreamer publishes with rtmp2sink.
TEST_APT_PACKAGES := ffmpeg gstreamer1.0-tools gstreamer1.0-plugins-base \
	gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly
PYTEST_ARGS ?=

.PHONY: run test lint fuzz bench install test-deps clean

$(PY):
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || { $(APT) update -qq && $(APT) install -y -qq python3-venv python3-pip; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,lint]'
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

## make run: install everything, start SeaweedFS (embedded S3) and the service in the foreground.
run: $(STAMP)
	$(VENV)/bin/onair run

test-deps:
	@missing=""; \
	command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || missing=1; \
	command -v gst-launch-1.0 >/dev/null && gst-inspect-1.0 rtmp2sink >/dev/null 2>&1 || missing=1; \
	if [ -n "$$missing" ]; then \
		$(APT) update -qq && $(APT) install -y -qq --no-install-recommends $(TEST_APT_PACKAGES); \
	fi

## make test: install what the tests need (ffmpeg CLI, GStreamer, SeaweedFS) and run them.
test: test-deps $(STAMP)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

## make fuzz: the RTMP chunk and AMF parsers, many more cases than CI runs.
fuzz: test-deps $(STAMP)
	ONAIR_FUZZ_EXAMPLES=20000 $(VENV)/bin/pytest -q tests/ingest/test_fuzz.py -p no:cacheprovider --timeout=0

## make bench: throughput, latency and density against the ffmpeg CLI, and the quality
## cost of the low-latency drain (figures printed).
bench: test-deps $(STAMP)
	$(PY) bench/throughput.py --repeat 3
	$(PY) bench/latency.py --seconds 40
	$(PY) bench/density.py --seconds 20
	$(PY) bench/drain_quality.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache bench/out
