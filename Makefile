# qemu-panthor: `make run` boots the default guest on the emulated GPU and runs the driver
# selftests; `make test` runs lint and the whole test suite. Both do all set-up themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
KERNEL ?= 7.2
GPU    ?= g610
# KERNEL: a Debian kernel line (7.2, 6.12); `debug` or `default`, a kernel built from
# images/kernel/<name>.config into the cache (once; docs/kernel-dev.md); a patched build named
# in images/kernel/builds.toml (7.2-aof: docs/alloc-on-fault.md); or a kernel tree's path
# (the arm64 guest's: the selftests).
LINES  := 7.2 6.12
SETUP_KERNEL := $(if $(filter $(KERNEL),$(LINES)),$(KERNEL),7.2)

.PHONY: all run test setup lint unit integration bench fuzz soak venv clean clean-cache kernel

all: test

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "qemu-panthor needs Python >= 3.11 ($(PYTHON) is older); set PYTHON=..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@

venv: $(BIN)/.installed

setup: venv
	$(BIN)/qemu-panthor setup --kernel $(SETUP_KERNEL)

# The selftests on the arm64 guest (KERNEL), then IGT's panthor tests on the x86_64 guest
# (Debian builds IGT for amd64 only; its kernel is built here once). Both summaries are
# printed; the exit status is the worse of the two. RUN=selftests or RUN=igt runs one.
RUN ?= selftests igt
# SUITE: the selftests' default suite, long (the timer-bound tests) or all
SUITE ?= default
# TIMELINE=FILE: the selftests' run also writes a Perfetto trace there (docs/perf.md)
TIMELINE ?=
run: setup
	@rc=0; \
	for what in $(RUN); do \
	    case "$$what" in \
	    selftests) set -- --kernel '$(KERNEL)' --suite '$(SUITE)' \
	               $(if $(TIMELINE),--timeline '$(TIMELINE)');; \
	    igt) set -- --run igt;; \
	    *) echo "RUN=$$what: choose selftests and/or igt"; exit 2;; \
	    esac; \
	    echo "$(BIN)/qemu-panthor boot $$* --gpu $(GPU)"; \
	    $(BIN)/qemu-panthor boot "$$@" --gpu $(GPU); r=$$?; [ $$r -gt $$rc ] && rc=$$r; \
	done; exit $$rc

# Build a kernel into the cache (KERNEL=debug|default) and print its directory.
kernel: setup
	$(BIN)/qemu-panthor kernel build --config $(if $(filter $(KERNEL),$(LINES)),default,$(KERNEL))

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest -q -m "not integration"

integration: setup
	$(BIN)/pytest -q -m integration

test: lint setup
	$(BIN)/pytest -q

bench: setup
	@for b in bench/bench_*.py; do echo "== $$b"; PYTHONPATH=tests $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis

clean-cache:
	rm -rf "$${XDG_CACHE_HOME:-$$HOME/.cache}/qemu-panthor"

# Bounded, seeded fuzz campaigns (figures in docs/fuzzing.md). SEED=N picks another seed.
SEED ?= 1
fuzz: venv
	PYTHONPATH=tests $(BIN)/python -m fuzz.fuzz_vfio_user --seed $(SEED)
	PYTHONPATH=tests $(BIN)/python -m fuzz.fuzz_pgtable --seed $(SEED)
	PYTHONPATH=tests $(BIN)/python -m fuzz.fuzz_mmio --seed $(SEED)
	PYTHONPATH=tests $(BIN)/python -m fuzz.fuzz_cs --seed $(SEED)

# In-guest soak (10,000 jobs, 64-VM rounds, 1,000 runtime-PM cycles), backend RSS/fds sampled.
soak: setup
	PYTHONPATH=tests $(BIN)/python bench/soak.py
