# Two entry points; each creates or reuses the local virtual environment .venv by itself.
#   make demo   train a small BNN on the bundled MNIST, check it, verify the RTL, run it
#               on the simulated board through the host link, build it for the Arty
#   make test   run the whole test suite
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
BNNHW := $(VENV)/bin/bnnhw
DEMO := build/demo

.PHONY: demo test venv clean

venv: $(STAMP)

# The DDR3 controller's CPU (boards.litedram) has its firmware compiled by a RISC-V cross
# compiler: Debian's is installed when none is found and apt-get can run (as root); when it
# cannot, the install goes on and generating that controller says what to install.
RISCV_PACKAGE := gcc-riscv64-unknown-elf
HAVE_RISCV := $(VENV)/bin/python -c "import sys; from boards.litedram import riscv_triple; \
	sys.exit(riscv_triple() is None)"
APT := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(RISCV_PACKAGE) >/dev/null 2>&1

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
	@$(HAVE_RISCV) || if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's $(RISCV_PACKAGE) (the DDR3 controller's CPU firmware)"; \
	  $(APT) || { apt-get update -qq >/dev/null 2>&1 && $(APT); } \
	  || echo "could not install $(RISCV_PACKAGE): the DDR3 controller with a CPU cannot be generated"; \
	fi
	touch $(STAMP)

demo: $(STAMP)
	$(BNNHW) train --model sfc --data mnist --epochs 10 --out $(DEMO)/sfc.pt
	$(BNNHW) check --model $(DEMO)/sfc.pt --images 1000
	$(BNNHW) verify --model $(DEMO)/sfc.pt --images 1000 --stall 0.2
	$(BNNHW) infer --sim --model $(DEMO)/sfc.pt
	$(BNNHW) build --board arty --model $(DEMO)/sfc.pt --out $(DEMO)/sfc-arty

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -n 2 -q

clean:
	rm -rf $(VENV) build .pytest_cache
