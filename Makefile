# `make demo` and `make test` work on a fresh machine: they create .venv and install everything first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch first, pinned to the CPU build on this machine's disk; override e.g. TORCH_SPEC='torch==2.13.0' with
# --index-url for CUDA. A plain `torch` requirement would otherwise pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install demo test test-cluster lint bench bench-track-deps clean system-deps

# Debian packages the tests use: the RTSP test camera (tests/rtsp_server.py) is GStreamer's RTSP server on
# Debian's python3-gi; the web page's tests drive Debian's chromium with Playwright (its own browser download is
# not used). Installed only when one is missing (needs root, or sudo).
SYSTEM_DEPS := gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
	gstreamer1.0-plugins-ugly gstreamer1.0-rtsp chromium

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test,bench]"
	# TrackEval (HOTA, IDF1, MOTA for bench.track and its test): its metadata pulls opencv-python beside the
	# headless build (both write cv2/); its metrics need only numpy and scipy.
	$(PY) -m pip install -q --no-deps "trackeval==1.3.0"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vigil demo

system-deps:
	@missing=$$(for p in $(SYSTEM_DEPS); do dpkg -s $$p 2>/dev/null | grep -q '^Status: install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		echo "installing Debian packages:" $$missing; \
		$$sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q --no-install-recommends $$missing; \
	fi

# The habits that keep the tree readable: lint and format (ruff), the layering contracts (import-linter,
# pyproject.toml [tool.importlinter]). `make test` runs them first: a broken one fails the build.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

# The suite, then the cluster tests (a pytest session of their own: their Ray is a multi-node cluster).
# pytest exits 5 when it collects no test: say so and fail loudly rather than pass silently.
test: $(STAMP) system-deps lint
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; fi; exit $$rc
	$(MAKE) --no-print-directory test-cluster

# vigil on a real multi-node Ray cluster on this machine (tests/cluster.py: a head without CPUs on 127.0.0.2, worker
# nodes on 127.0.0.3 and 127.0.0.4), a Kafka broker and an S3 server; the first pytest run of `make test` shows these
# tests skipped. -rA prints each test's durations (recovery times included), --durations the slowest steps.
test-cluster: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q --cluster -m cluster -rA --durations=10 tests/test_cluster.py \
		tests/test_cluster_faults.py; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no cluster tests" >&2; fi; exit $$rc

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m bench.archive

# The trackers bench.track compares with (by hand, never in `make test`): boxmot (AGPL-3.0, a baseline only)
# and Roboflow trackers without their declared dependencies (torchvision, timm, opencv-python, pyarrow<24),
# which their trackers do not import and which would replace this machine's torch build and pyarrow.
bench-track-deps: $(STAMP)
	$(PY) -m pip install -q -e ".[bench-track]"
	$(PY) -m pip install -q --no-deps "boxmot==25.0.0" "trackers==2.6.1"
	HF_HUB_OFFLINE=1 $(PY) -m bench.stream
	HF_HUB_OFFLINE=1 $(PY) -m bench.summarize
	$(PY) -m bench.search

clean:
	rm -rf $(VENV) vigil-demo build *.egg-info
