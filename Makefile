# Two commands on a fresh machine:  make lab   (install what is missing, open the course)
#                                   make test  (install what is missing, run every test)
# Both make .venv/ once and reuse it; it is rebuilt when pyproject.toml or the constraints change.
#
# `make test` (what CI runs) = `make lectures`, `make lectures-float32` (the same in float32 where the
# default is bfloat16), then `make unit` with the browser test of the
# lecture pages: all run even when one fails, and make fails if any does. About 50 minutes on
# 2 cores from a fresh clone (install 2, lectures 15 + 24 in float32, unit 9; see README).
#   make lectures  every notebook in cpu mode under nbval (the real lecture sizes, checked claims);
#                  the same run writes the executed lectures as HTML, with an index:
#                  build/lectures/index.html (LECTURES_DIR). Needs the pretrained weights
#                  (../shared/weights): with random weights the claims mean nothing, so
#                  `make test` skips it and says so.
#   make unit      the fast part: library tests, the notebooks in smoke mode; the browser test of
#                  the lecture HTML only runs with NSTLIB_LECTURES_DIR set (make test sets it)
# Also: make bench (loss versus seconds: the plain loop against every preset, 4 pairs, 256 and 512 px,
# and draft and fast at 1024 px; about an hour on 2 cores), make bench-step (the cost of one step), make browser (install headless
# Chromium), make student (the student edition in build/student), make course-cells (the notebooks'
# generated cells: badges, Colab set-up, self-checks, solutions), make slides (figures as 200 dpi
# PNGs and widget screenshots in build/slides), make clean-venv,
# make test-machines (the cpu lecture run and the pretrained tests under five settings: default,
# float32, bfloat16, 1 thread, AVX2 only; which claim held where in build/machines/table.md; each
# row is a full lecture run, 10-25 min on 2 cores: about 1.5 hours for the five),
# make class-test (a class of 30 on this machine: 30 Jupyter kernels run notebook 1's set-up, 4 of
# them the panel's transfer while the others answer a cell every few seconds; memory, replies,
# slow-down and kernels killed in build/class/report.md; CLASS_TEST_ARGS="--kernels 8 --running 2").

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

# Where `make lectures` writes <notebook>.html, <notebook>.ipynb (with outputs) and index.html.
LECTURES_DIR ?= build/lectures
# Which notebooks `make lectures` runs (e.g. LECTURE_NOTEBOOKS=notebooks/01_setup_and_tour.ipynb).
LECTURE_NOTEBOOKS ?= notebooks
# nbval's limit for one cell of the cpu lecture run, in seconds (pytest-timeout's is 2 min above).
LECTURE_CELL_TIMEOUT ?= 900

NBVAL := --nbval-lax --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg
# The fast part: unit tests, and the notebooks in smoke mode (tiny sizes, no figures drawn).
UNIT_RUN = NSTLIB_WEIGHTS='$(TEST_WEIGHTS)' NSTLIB_IMAGE_DIR='$(SHARED_IMAGES)' NSTLIB_SMOKE=1 MPLBACKEND=Agg \
	$(PY) -m pytest tests notebooks $(NBVAL) --durations=15
# The lectures in cpu mode. MPLBACKEND is unset so that the kernels draw inline: the figures
# become image/png outputs, which tests/lectures_html.py (--lectures-html) writes into the pages.
LECTURES_RUN = env -u MPLBACKEND NSTLIB_MODE=cpu NSTLIB_WEIGHTS='$(TEST_WEIGHTS)' NSTLIB_IMAGE_DIR='$(SHARED_IMAGES)' \
	$(PY) -m pytest $(LECTURE_NOTEBOOKS) $(NBVAL) --nbval-cell-timeout=$(LECTURE_CELL_TIMEOUT) \
	--timeout=$$(( $(LECTURE_CELL_TIMEOUT) + 120 )) --lectures-html '$(LECTURES_DIR)' --durations=15

.PHONY: lab test test-all unit lectures lectures-float32 bench bench-step browser clean-venv student course-cells slides \
	test-machines class-test

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev]'
	touch $(STAMP)

# JupyterLab refuses to run as root without --allow-root (containers, Codespaces and many cloud
# machines run as root), and with no display it cannot open a browser: it then prints the URL
# to open (with its token) and keeps serving. LAB_PORT chooses the port (default: Jupyter's 8888).
LAB_ROOT    := $(if $(filter 0,$(shell id -u)),--allow-root)
LAB_BROWSER := $(if $(DISPLAY)$(WAYLAND_DISPLAY)$(filter Darwin,$(shell uname -s)),,--no-browser)
LAB_PORT    ?=
lab: $(STAMP)
	@echo "make lab: starting JupyterLab on the course's notebooks; open the URL it prints below (Ctrl-C stops it)."
	$(VENV)/bin/jupyter lab notebooks/ $(LAB_ROOT) $(LAB_BROWSER) $(if $(LAB_PORT),--port=$(LAB_PORT))

# Headless Chromium for tests/test_browser.py (Debian package; instant when present; exits 0
# with the reason where it cannot install, and that test is then skipped).
browser:
	bash .ci/install-browser.sh

# Every test CI runs: the cpu lecture run of the notebooks (checked claims, HTML pages), library
# unit tests, pretrained-weight tests, the widget panel and the lecture pages in a real browser,
# and the notebooks under nbval in smoke mode.
test: $(STAMP) browser
ifeq ($(TEST_WEIGHTS),random)
	@echo "make test: no pretrained weights at $(SHARED_WEIGHTS): the cpu lecture run is SKIPPED" \
	      "(its claims need pretrained weights); running the unit tests only."
	$(UNIT_RUN)
else
	status=0; \
	$(LECTURES_RUN) || status=1; \
	$(MAKE) --no-print-directory lectures-float32 || status=1; \
	NSTLIB_LECTURES_DIR='$(abspath $(LECTURES_DIR))' $(UNIT_RUN) || status=1; \
	exit $$status
endif

# The old name of `make test`.
test-all: test

# The fast part of `make test`: no lecture run.
unit: $(STAMP) browser
	$(UNIT_RUN)

# Every notebook in cpu mode under nbval, once; the executed lectures go to $(LECTURES_DIR).
lectures: $(STAMP)
	$(LECTURES_RUN)

# The same lecture run in float32 (NSTLIB_PRECISION), where the default run was bfloat16: every
# claim must hold in both precisions. On a machine whose default is float32 already it says so
# and stops. The executed lectures go to $(LECTURES_DIR)-float32.
AUTO_PRECISION = $(PY) -c 'import torch; from nstlib.precision import resolve_precision; print(resolve_precision("auto", torch.device("cpu")).name)'
lectures-float32: $(STAMP)
	@if [ "$$($(AUTO_PRECISION))" = float32 ]; then \
	  echo "make lectures-float32: precision auto is float32 on this machine: the default lecture run was float32."; \
	else \
	  NSTLIB_PRECISION=float32 $(MAKE) --no-print-directory lectures LECTURES_DIR='$(LECTURES_DIR)-float32'; \
	fi

# Writes build/bench/curves.md (the table), curves.png (the figure) and curves.json (the curves).
bench: $(STAMP)
	NSTLIB_WEIGHTS='$(TEST_WEIGHTS)' NSTLIB_IMAGE_DIR='$(SHARED_IMAGES)' $(PY) -m nstlib.bench_curves --out build/bench

bench-step: $(STAMP)
	NSTLIB_WEIGHTS='$(TEST_WEIGHTS)' NSTLIB_IMAGE_DIR='$(SHARED_IMAGES)' $(PY) -m nstlib.bench

# Slides: every notebook's figures as 200 dpi PNGs in $(SLIDES_DIR) (index.html and index.md list
# them with their section) and screenshots of the tuning panel and the layer explorer taken in
# JupyterLab with headless Chromium. The run mode decides the sizes: by default the device's, as
# in class (gpu on a GPU machine: the paper's sizes, every transfer >= 256 px; cpu without one: the
# CPU lecture's, about as long as make lectures); NSTLIB_MODE=cpu|gpu forces one.
# SLIDES_NOTEBOOKS=notebooks/04_... chooses notebooks; SLIDES_WIDGETS=--no-widgets skips the screenshots.
SLIDES_DIR       ?= build/slides
SLIDES_NOTEBOOKS ?= notebooks
SLIDES_MODE      ?= $(NSTLIB_MODE)
SLIDES_WIDGETS   ?= --widgets
# The shared test weights and images where this checkout has them, else the user's settings.
SLIDES_DATA      := $(if $(wildcard $(SHARED_WEIGHTS)),$(if $(NSTLIB_WEIGHTS),,NSTLIB_WEIGHTS='caffe:$(SHARED_WEIGHTS)')) \
	$(if $(wildcard $(SHARED_IMAGES)),$(if $(NSTLIB_IMAGE_DIR),,NSTLIB_IMAGE_DIR='$(SHARED_IMAGES)'))
slides: $(STAMP) browser
	env -u MPLBACKEND NSTLIB_MODE='$(SLIDES_MODE)' $(SLIDES_DATA) $(PY) tools/slides.py $(SLIDES_NOTEBOOKS) \
	--out '$(SLIDES_DIR)' $(SLIDES_WIDGETS)

# The student edition: build/student/*.ipynb, solutions replaced by stubs, outputs cleared.
student: $(STAMP)
	$(PY) tools/student.py --out build/student

# Insert or update the notebooks' generated cells (badges, Colab set-up, "your turn" self-checks,
# solutions from tools/solutions/); run after changing [project.urls] Repository in pyproject.toml.
course-cells: $(STAMP)
	$(PY) tools/course_cells.py

clean-venv:
	rm -rf $(VENV)

# The lecture run and the pretrained tests once per row (tools/test_machines.py: the rows and their
# settings), then a table of which claim held where: build/machines/table.md. The script runs
# $(LECTURES_RUN) itself, with {notebooks} and {lectures} filled in per row, so the lecture run's
# options stay in LECTURES_RUN. TEST_MACHINES_ROWS=float32,avx2 chooses rows, LECTURE_NOTEBOOKS
# notebooks, TEST_MACHINES_TESTS where the pretrained tests are looked for (pytest -m pretrained).
TEST_MACHINES_ROWS      ?= default,float32,bfloat16,threads1,avx2
TEST_MACHINES_TESTS     ?= tests
TEST_MACHINES_NOTEBOOKS := $(LECTURE_NOTEBOOKS)
test-machines: override LECTURE_NOTEBOOKS = {notebooks}
test-machines: override LECTURES_DIR = {lectures}
test-machines: export TEST_MACHINES_LECTURES_RUN = $(LECTURES_RUN)
test-machines: $(STAMP)
	NSTLIB_WEIGHTS='$(TEST_WEIGHTS)' NSTLIB_IMAGE_DIR='$(SHARED_IMAGES)' $(PY) tools/test_machines.py \
	--rows '$(TEST_MACHINES_ROWS)' --notebooks $(TEST_MACHINES_NOTEBOOKS) --tests $(TEST_MACHINES_TESTS)

# A class on one machine (tools/class_test.py, issue 28): real kernels through jupyter_client, one
# shared TORCH_HOME (a stand-in VGG-19 of the real size unless --torch-home names one).
CLASS_TEST_ARGS ?=
class-test: $(STAMP)
	NSTLIB_IMAGE_DIR='$(SHARED_IMAGES)' $(PY) tools/class_test.py $(CLASS_TEST_ARGS)
