# Two commands, nothing by hand:
#   make reproduce   set up .venv, then run every notebook (small scale), figures -> figures/
#   make reproduce-fp32   notebook 01 alone in fp32 (as a CPU without bf16 runs it), recorded
#   make reproduce-avx2   notebook 01 alone with AVX2 kernels (as a CPU without AVX-512 runs it), recorded
#   make test        set up .venv, then run the test suite
# and for readers:
#   make lab         set up .venv, then JupyterLab on the notebooks (Ctrl-C stops it)
#   make book        the executed notebooks and notebooks/book/ as a web book: runs/book/html/index.html,
#                    checked in headless Chromium (installed from Debian's packages if missing)
#   make report      the same (the name of earlier releases)
#   make reference   retrain the reference runs of data/reference/ (about 55 minutes)
#   make reference-breadth   the budget and ablation grids of data/reference/breadth/ (see its README)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

# Real data lies beside the project on the project's machines; elsewhere the
# default is data/ (see data/README.md for the fetch step).
SHARED_DATA := $(abspath ../shared/data)
AFFCONS_DATA_DIR ?= $(if $(wildcard $(SHARED_DATA)/.),$(SHARED_DATA),$(abspath data))
export AFFCONS_DATA_DIR
# Keep pip quiet about the machine's optional local indexes; errors still show.
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# Python caches the bytecode of what it imports (its default; some machines switch it
# off): the set-up then skips compiling every installed file (pip --no-compile, about
# half the install's time) and each test process imports torch from the cache.
export PYTHONDONTWRITEBYTECODE :=

# JupyterLab: local only; --allow-root because containers often run as root.
LAB_PORT ?= 8888
LAB_TOKEN ?=
LAB_TOKEN_FLAG := $(if $(LAB_TOKEN),--IdentityProvider.token=$(LAB_TOKEN),)

.PHONY: setup reproduce reproduce-fp32 reproduce-avx2 test lab book report bench reference reference-paired reference-breadth clean

# setuptools warns on every editable install that a folder named like the package
# could shadow it; here that folder is the package itself (UserWarnings of the build only).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel 2> >(grep -v "is ignored: it is neither" >&2)
	PYTHONWARNINGS=ignore::UserWarning $(PY) -m pip install -q --no-compile -e '.[test]' 2> >(grep -v "is ignored: it is neither" >&2)
	$(PY) -m ipykernel install --sys-prefix --name python3 > /dev/null
	touch $@

setup: $(VENV)/.installed

# make reproduce expects the machine to itself: all cores for torch (a one-off run
# takes half, see README); OMP_NUM_THREADS=1 make reproduce on a busy machine.
reproduce: setup
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-$$(nproc)} $(PY) -m affcons_lib reproduce --notebooks notebooks --runs runs --figures figures --record data/reproduce

# Notebook 01 alone in fp32 (a CPU without native bf16 runs that): its minutes and
# verdicts recorded in data/reproduce/fp32/ beside make reproduce's (README, "Run times").
# On another kind of CPU, FP32_RECORD=data/reproduce/NAME records beside it instead of over it.
FP32_RECORD ?= data/reproduce/fp32
reproduce-fp32: setup
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-$$(nproc)} $(PY) -m affcons_lib reproduce --notebooks notebooks --only 01 \
		-p precision fp32 --runs runs/fp32 --figures runs/fp32/figures --record $(FP32_RECORD)

# Notebook 01 as a CPU without AVX-512 (and so without native bf16: AMD EPYC before Genoa, Intel Xeon
# before Ice Lake) runs it: this machine with torch, oneDNN, numpy and numba held to their
# AVX2 kernels (precision "auto" then runs fp32); recorded in data/reproduce/avx2/.
AVX2_KERNELS := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR" NUMBA_CPU_NAME=haswell
reproduce-avx2: setup
	$(AVX2_KERNELS) OMP_NUM_THREADS=$${OMP_NUM_THREADS:-$$(nproc)} $(PY) -m affcons_lib reproduce --notebooks notebooks --only 01 \
		--runs runs/avx2 --figures runs/avx2/figures --record data/reproduce/avx2

# The tests in one worker per core (pytest-xdist); each session fixture stays in one
# worker (tests/conftest.py), the longest groups dealt first (--no-loadscope-reorder keeps
# conftest's order; xdist's own orders them by their number of tests). TEST_WORKERS=0 runs
# them in this process, one after another.
TEST_WORKERS ?= $(shell nproc)
test: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder

lab: setup
	@echo "JupyterLab with the project's kernel; data from $(AFFCONS_DATA_DIR). Open the http://127.0.0.1 link below; Ctrl-C twice stops it."
	$(VENV)/bin/jupyter lab --no-browser --allow-root --ip=127.0.0.1 --port=$(LAB_PORT) \
		--ServerApp.root_dir=notebooks $(LAB_TOKEN_FLAG)

# The reference runs under data/reference/ (weights, configs, learning curves): the
# three methods 3000 iterations each, one thread each, crac beside the two others
# (about 55 minutes on 2 cores). Notebooks 03 and 05 load them.
reference: setup
	OMP_NUM_THREADS=1 $(PY) -m affcons_lib reference --methods crac --set snapshot_iters=100,300,1000,3000 & crac=$$!; \
	OMP_NUM_THREADS=1 $(PY) -m affcons_lib reference --methods sparse_only full_supervision || exit 1; \
	wait $$crac

# The paired reference runs under data/reference/paired/: notebook 01 itself, with
# a longer schedule than a reader's first run (PAIRED_PARAMETERS: its ten paired draws at 600 iterations), then
# exported small (scores, claims, weights, loss logs) to data/reference/PAIRED_NAME/. Notebook 01
# shows them. The longer runs with the earlier defaults, data/reference/paired_1500/:
#   make reference-paired PAIRED_NAME=paired_1500 PAIRED_PARAMETERS='{iterations: 1500, lr: 0.001,
#     lr_schedule: constant, warmup: 0, precision: fp32, seeds: [0, 1, 2], methods: [sparse_only, crac]}'
PAIRED_PARAMETERS ?= {iterations: 600}
PAIRED_NAME ?= paired
PAIRED_WORK := $(abspath runs/paired_reference)
reference-paired: setup
	rm -rf $(PAIRED_WORK) && mkdir -p $(PAIRED_WORK)
	AFFCONS_RUNS_DIR=$(PAIRED_WORK) AFFCONS_RESULTS_DIR=$(PAIRED_WORK)/results AFFCONS_FIGURES_DIR=$(PAIRED_WORK)/figures \
	AFFCONS_STATIC=1 $(VENV)/bin/papermill notebooks/01_training.ipynb $(PAIRED_WORK)/01_training.ipynb \
		--cwd notebooks -y "$(PAIRED_PARAMETERS)"
	$(PY) -m affcons_lib reference --export-paired $(PAIRED_WORK) --paired-name $(PAIRED_NAME) --parameters \
		"$$($(PY) -c 'import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.argv[1])))' '$(PAIRED_PARAMETERS)')"

# The breadth reference runs under data/reference/breadth/: the grids its config.yaml
# declares (annotation budgets in 3D and 2D, the method's parts), ten paired draws each,
# two processes at one thread; resumes where a previous call stopped (runs/breadth/).
BREADTH_GRIDS ?= budgets_3d budgets_2d ablation_3d sizes_3d
reference-breadth: setup
	$(PY) -m affcons_lib reference --breadth $(BREADTH_GRIDS) --workers 2 --work runs/breadth

# The book: the executed notebooks of runs/ (from make reproduce, not executed again) and the
# pages of notebooks/book/, built offline by Sphinx + MyST-NB, then every page opened in
# headless Chromium (it renders, its figures show, its links resolve).
CHROMIUM := /usr/bin/chromium
$(VENV)/.browser: $(VENV)/.installed
	PYTHONWARNINGS=ignore::UserWarning $(PY) -m pip install -q -e '.[browser]' 2> >(grep -v "is ignored: it is neither" >&2)
	@test -x $(CHROMIUM) -a -x /usr/bin/chromedriver || { echo "installing Debian's chromium and chromium-driver"; \
		$$(command -v sudo) apt-get install -y -q --no-install-recommends chromium chromium-driver > /dev/null; }
	touch $@

book: $(VENV)/.browser
	$(PY) -m affcons_lib book --runs runs --out runs/book --check

report: book

# Each benchmark's output, which starts with its command and provenance, is kept as a
# record per kind of CPU: benchmarks/results/NAME_CPU.txt (the book includes them).
define bench_one
$(PY) benchmarks/$(1).py $(2) > benchmarks/results/.$(1).partial && \
	mv benchmarks/results/.$(1).partial benchmarks/results/$(1)_$$cpu.txt && cat benchmarks/results/$(1)_$$cpu.txt
endef
bench: setup
	cpu=$$($(PY) -c "from affcons_lib.companion.provenance import cpu_slug; print(cpu_slug())"); \
	$(call bench_one,bench_metrics,) && \
	$(call bench_one,bench_postprocess,--skip-waterz) && \
	$(call bench_one,bench_models,) && \
	$(call bench_one,bench_train,--compile --side-by-side 40)

clean:
	rm -rf $(VENV) runs .pytest_cache
