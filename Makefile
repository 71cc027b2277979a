# facehil: the two commands are `make demo` and `make test`. Both set everything up first,
# are idempotent, and stop whatever services they start.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.facehil-installed

APT_PACKAGES := pcscd libpcsclite-dev vsmartcard-vpcd opensc pcsc-tools gcc g++ swig python3-dev python3-venv \
	redis-server postgresql chromium fonts-dejavu-core fonts-noto-cjk util-linux iproute2 \
	tesseract-ocr-jpn libtesseract-dev libleptonica-dev pkg-config

# Face data: a user's own via FACEHIL_FACES, else the shared folder when it exists here,
# else the packaged low-fidelity samples.
SHARED_FACES := $(abspath ../shared/data/faces)
ifeq ($(FACEHIL_FACES),)
ifneq ($(wildcard $(SHARED_FACES)/README.md),)
export FACEHIL_FACES := $(SHARED_FACES)
endif
endif

.PHONY: help setup apt venv demo test bench clean

help:
	@echo "make demo   set up, then run the nightly suite against the simulated station"
	@echo "make test   set up, then run the whole test suite"
	@echo "make bench  set up, then run the benchmarks"

apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing apt packages: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	# the face_recognition package is the accuracy/latency baseline only; its dependency
	# `dlib` would compile from source, and dlib-bin already provides the module.
	$(PY) -m pip install -q --no-deps face_recognition==1.3.0
	touch $(STAMP)

venv: $(STAMP)

setup: apt venv

demo: setup
	scripts/with-services.sh $(VENV)/bin/facehil demo

test: setup
	scripts/with-services.sh $(PY) -m pytest tests $(PYTEST_ARGS)

bench: setup
	scripts/with-services.sh $(PY) -m pytest benches --benchmark-columns=min,median,mean,max,rounds $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .benchmarks
