# Two commands on a fresh machine:  make lab   (install what is missing, open the course)
#                                   make test  (install what is missing, run every test)
# Both make .venv/ once and reuse it; it is rebuilt when pyproject.toml or the constraints change.

PYTHON      ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
CONSTRAINTS ?= constraints-ci.txt
STAMP       := $(VENV)/.installed

# Pretrained test weights live beside the project (../shared/weights), never inside it.
SHARED_WEIGHTS ?= $(abspath ../shared/weights/vgg16-caffe-imagenet-features.pth)
ifeq ($(wildcard $(SHARED_WEIGHTS)),)
TEST_WEIGHTS ?= random
else
TEST_WEIGHTS ?= caffe:$(SHARED_WEIGHTS)
endif
# The paper's images for tests and CI runs (never copied into the repo).
SHARED_IMAGES ?= $(abspath ../shared/images)

.PHONY: lab test bench browser clean-venv

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev]'
	touch $(STAMP)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

# Headless Chromium for tests/test_browser.py (Debian package; instant when present; exits 0
# with the reason where it cannot install, and that test is then skipped).
browser:
	bash .ci/install-browser.sh

# Every test: library unit tests, pretrained-weight tests (skipped with a reason when the
# weights are absent), the widget panel in a real browser, and the notebooks under nbval in
# smoke mode.
test: $(STAMP) browser
	NSTLIB_WEIGHTS='$(TEST_WEIGHTS)' NSTLIB_IMAGE_DIR='$(SHARED_IMAGES)' NSTLIB_SMOKE=1 MPLBACKEND=Agg \
	$(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env \
	    --nbval-sanitize-with notebooks/sanitize.cfg --durations=15

bench: $(STAMP)
	NSTLIB_WEIGHTS='$(TEST_WEIGHTS)' NSTLIB_IMAGE_DIR='$(SHARED_IMAGES)' $(PY) -m nstlib.bench

clean-venv:
	rm -rf $(VENV)
