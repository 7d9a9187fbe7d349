# fusewb: `make demo` runs the main job end to end, `make test` runs the tests. Both set up first.
VENV ?= .venv
PY := $(VENV)/bin/python
FUSEWB := $(VENV)/bin/fusewb
DEMO_OUT ?= /tmp/fusewb-demo

.PHONY: setup demo test soak bench dist clean

setup:
	@scripts/setup.sh

demo: setup
	$(FUSEWB) run msync-slow close-slow sync-stalled hot-unplug reclaim-memcg --keep $(DEMO_OUT) --format html

# The suite on this kernel, then doctor, the kernel tests and `fusewb run all` in a guest of each
# kernel of the matrix (fusewb/guest.py, fusewb/kernels.py); junit and results files per kernel in
# build/test-results/, and README's kernel table rewritten from those results.
TEST_RESULTS ?= build/test-results
test: setup
	@start=$$(date +%s); $(PY) -m pytest --junitxml=$(TEST_RESULTS)/junit-$$(uname -r).xml $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc = 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	host=$$(( $$(date +%s) - start )); \
	$(PY) -m fusewb.guest --out $(TEST_RESULTS) $(GUEST_ARGS); grc=$$?; \
	$(PY) -m fusewb.kernels table --results $(TEST_RESULTS) --readme README.md; trc=$$?; \
	echo "make test: host $$(uname -r): pytest rc $$rc in $$host s; guest stage rc $$grc; kernel table rc $$trc; total $$(( $$(date +%s) - start )) s"; \
	[ $$rc = 0 ] && [ $$grc = 0 ] && [ $$trc = 0 ]

# N runs of the whole suite and the demo in a fresh clone, with each test's pass count
soak:
	@scripts/soak.sh $(or $(N),10)

bench: setup
	$(PY) -m bench

# sdist, wheel, a wheelhouse of the core dependencies and one .pyz for this Python (scripts/dist.sh)
dist: setup
	@scripts/dist.sh dist

clean:
	rm -rf $(VENV) build dist *.egg-info bpf/kernel-include
