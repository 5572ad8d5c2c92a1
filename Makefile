# onair — the two commands that matter: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-12)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get
# The ffmpeg CLI is the tests' real publisher and prober; GStreamer publishes with rtmp2sink
# and plays with playbin; Chromium runs hls.js (the players tier, tests/players); the store
# tests start Debian's PostgreSQL server as an unprivileged user in a temporary directory;
# the restream tests forward into nginx with its RTMP module (and `stream` for RTMPS).
# The SRT ingest loads Debian's libsrt (through ctypes): the service needs it to run.
RUN_APT_PACKAGES := libsrt1.5-openssl
TEST_APT_PACKAGES := ffmpeg gstreamer1.0-tools gstreamer1.0-plugins-base \
	gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly chromium \
	postgresql nginx libnginx-mod-rtmp libnginx-mod-stream srt-tools $(RUN_APT_PACKAGES)
# hls.js, mpegts.js and uPlot (the web console's, and the players the tests drive),
# pinned in package-lock.json; npm writes this file at each install.
NODE_STAMP := node_modules/.package-lock.json
PYTEST_ARGS ?=

.PHONY: run test test-fast lint fuzz bench cluster-demo install run-deps test-deps clean

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
run: run-deps $(NODE_STAMP) $(STAMP)
	$(VENV)/bin/onair run

run-deps:
	@ls /usr/lib/*/libsrt.so.1.5 >/dev/null 2>&1 || { $(APT) update -qq && $(APT) install -y -qq --no-install-recommends $(RUN_APT_PACKAGES); }

test-deps: $(NODE_STAMP)
	@missing=""; \
	command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || missing=1; \
	command -v gst-launch-1.0 >/dev/null && gst-inspect-1.0 rtmp2sink >/dev/null 2>&1 || missing=1; \
	command -v chromium >/dev/null || missing=1; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing=1; \
	ls /usr/lib/nginx/modules/ngx_rtmp_module.so /usr/lib/nginx/modules/ngx_stream_module.so >/dev/null 2>&1 || missing=1; \
	command -v srt-live-transmit >/dev/null && ls /usr/lib/*/libsrt.so.1.5 >/dev/null 2>&1 || missing=1; \
	if [ -n "$$missing" ]; then \
		$(APT) update -qq && $(APT) install -y -qq --no-install-recommends $(TEST_APT_PACKAGES); \
	fi

# npm ci only when node_modules is missing or the lock changed.
$(NODE_STAMP): package-lock.json package.json
	@command -v npm >/dev/null || { $(APT) update -qq && $(APT) install -y -qq --no-install-recommends nodejs npm; }
	npm ci --no-audit --no-fund
	@touch $@

## make test: install what the tests need (ffmpeg CLI, GStreamer, Chromium, hls.js, SeaweedFS)
## and run them all, the players tier included, on one pytest-xdist worker per core (a
## module's tests spread over the workers; the players tier's one live on a single worker).
test: test-deps $(STAMP)
	$(VENV)/bin/pytest -n auto --dist loadgroup $(PYTEST_ARGS)

## make test-fast: the edit loop, everything but the players tier and the tests marked slow
## (real-time end-to-end scenarios, `pytestmark = pytest.mark.slow` in their modules), in parallel too.
test-fast: test-deps $(STAMP)
	$(VENV)/bin/pytest -n auto --dist loadgroup -m "not players and not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

## make fuzz: the RTMP chunk and AMF parsers, many more cases than CI runs.
fuzz: test-deps $(STAMP)
	ONAIR_FUZZ_EXAMPLES=20000 $(VENV)/bin/pytest -q tests/ingest/test_fuzz.py -p no:cacheprovider --timeout=0

## make bench: throughput, latency, density and memory against the ffmpeg CLI, and the quality
## cost of the low-latency drain, and a 10-minute cut against the ffmpeg CLI (figures printed).
bench: test-deps $(STAMP)
	$(PY) bench/throughput.py --repeat 3
	$(PY) bench/latency.py --seconds 40
	$(PY) bench/density.py --seconds 20
	$(PY) bench/drain_quality.py
	$(PY) bench/memory.py --seconds 15
	$(PY) bench/end_to_end.py
	$(PY) bench/cut.py
	$(PY) bench/cluster.py --kills 10

## make cluster-demo: three hosts on one PostgreSQL and one SeaweedFS behind a TCP
## round-robin balancer on port 1935, as plain processes; Ctrl-C stops all.
cluster-demo: run-deps test-deps $(STAMP)
	$(PY) deploy/cluster_demo.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache bench/out node_modules
