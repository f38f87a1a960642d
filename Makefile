# hypervisor.vfio — set-up, quality gates and demo.
#
#   make test     set everything up, run every gate, print a timing table (what CI runs)
#   make demo     set everything up, boot the lab VM, converge it, show drivers, tear down
#   make <gate>   run one gate alone: sanity units pytest lint docs-lint build importer
#                 changelog-lint core-py39 ee docsite matrix fresh integration molecule
#   make fresh    'make demo' from a clone in a fresh minimal Debian 12 root (hack/fresh-gate)
#   make venv     only the Python venv (.venv/), make apt-deps only the Debian packages
#   make lab-up / lab-down / lab-ssh   the lab hypervisor VM (LAB_NAME selects an instance)
#   make clean    remove build output and caches (keeps .venv); make distclean also .venv

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

REPO  := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
VENV  := $(REPO)/.venv
BIN   := $(VENV)/bin
STAMP := $(REPO)/.cache/stamps
BUILD := $(REPO)/build
export PATH := $(BIN):$(PATH)
# Keep Ansible's state for the gates out of $HOME.
export ANSIBLE_HOME ?= $(REPO)/.cache/ansible-home
export ANSIBLE_LOCAL_TEMP ?= $(REPO)/.cache/ansible-tmp

# Always-on gates, in order (cheap first).
# fresh: the README's 'make demo' in a fresh Debian root; after the cheap gates, before the
# lab gates, so a missing install step shows there first (and nothing else runs a VM then).
GATES := changelog-lint build importer ee docs-lint docsite lint pytest core-py39 units sanity matrix fresh
# Gates that need the lab: included in 'make test' only once their files exist.
INTEGRATION_NEEDS := lab/labctl tests/integration/conftest.py
MOLECULE_NEEDS    := lab/labctl extensions/molecule/run.sh extensions/molecule/default/molecule.yml
missing = $(strip $(foreach f,$(1),$(if $(wildcard $(REPO)/$(f)),,$(f))))
OPTIONAL_GATES := $(if $(call missing,$(INTEGRATION_NEEDS)),,integration) \
                  $(if $(call missing,$(MOLECULE_NEEDS)),,molecule)

.PHONY: help setup venv apt-deps apt-deps-demo test demo clean distclean lab-up lab-down lab-ssh \
        sanity units pytest core-py39 fresh lint docs-lint build importer changelog-lint integration molecule \
        ee docsite matrix

help:
	@sed -n '2,11s/^# \{0,1\}//p' $(REPO)/Makefile

# ---------------------------------------------------------------- set-up
setup: apt-deps venv

apt-deps:
	@$(REPO)/hack/apt-deps

venv: $(STAMP)/venv

# Rebuilt only when the pins or the interpreter choice change.
$(STAMP)/venv: $(REPO)/requirements.txt $(REPO)/hack/find-python $(REPO)/hack/venv-sync
	@py="$$($(REPO)/hack/find-python)"; \
	if [ ! -x $(BIN)/python ] || [ "$$(realpath $(BIN)/python)" != "$$(realpath "$$py")" ]; then \
	  echo "venv: creating $(VENV) with $$py ($$($$py --version))"; \
	  rm -rf $(VENV); "$$py" -m venv $(VENV); \
	fi
	$(BIN)/python -m pip install -q --disable-pip-version-check -r $(REPO)/requirements.txt
	$(BIN)/python $(REPO)/hack/venv-sync $(REPO)/requirements.txt
	$(BIN)/python -m pip check
	@mkdir -p $(STAMP) && touch $@
	@echo "venv: ready ($$($(BIN)/python --version), ansible-core $$($(BIN)/python -c 'import ansible; print(ansible.__version__)'))"

# ---------------------------------------------------------------- all gates
test: setup
	@for g in integration molecule; do \
	  case " $(OPTIONAL_GATES) " in *" $$g "*) ;; *) \
	    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"; \
	    echo "!!! SKIPPING gate '$$g': missing $$( [ $$g = integration ] && echo '$(call missing,$(INTEGRATION_NEEDS))' || echo '$(call missing,$(MOLECULE_NEEDS))')"; \
	    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"; ;; \
	  esac; \
	done
	@MAKE="$(MAKE)" $(REPO)/hack/run-gates $(GATES) $(OPTIONAL_GATES)

# ---------------------------------------------------------------- the lab VM (lab/README.md)
# LAB_NAME=<name> selects an instance (default: default; its inventory is .lab/inventory.yml).
lab-up: setup
	$(REPO)/lab/labctl up

lab-down:
	$(REPO)/lab/labctl down

lab-ssh:
	$(REPO)/lab/labctl ssh

# ---------------------------------------------------------------- gates
sanity: venv
	$(REPO)/hack/ansible-test-gate sanity

units: venv
	$(REPO)/hack/ansible-test-gate units

# The module core's unit tests on Python 3.9, the oldest Python of managed hosts.
core-py39:
	$(REPO)/hack/core-py39

# The README's first command from nothing: a minimal Debian 12 root (mmdebstrap), a clone of
# HEAD in its /root, 'make demo' chrooted there (hack/fresh-gate; needs root).
fresh: apt-deps
	$(REPO)/hack/fresh-gate

# Plain pytest from the repo root (pytest.ini: testpaths, collection import path).
pytest: venv
	cd $(REPO) && $(BIN)/pytest

lint: venv
	cd $(REPO) && $(BIN)/ansible-lint

docs-lint: venv
	$(REPO)/hack/docs-lint

changelog-lint: venv
	cd $(REPO) && $(BIN)/antsibull-changelog lint

build: venv
	$(REPO)/hack/build-collection

importer: build
	$(REPO)/hack/importer

# The execution environment: introspection of the installed tarball, ansible-builder create.
ee: build
	$(REPO)/hack/ee-check

# The docs site: pages up to date with docs/*.md, antsibull-docs lint, Sphinx build.
docsite: build
	$(REPO)/hack/docsite

integration: setup
	@for f in $(INTEGRATION_NEEDS); do [ -e $(REPO)/$$f ] || { echo "integration: cannot run, missing $$f" >&2; exit 1; }; done
	$(REPO)/hack/integration-gate

molecule: setup
	@for f in $(MOLECULE_NEEDS); do [ -e $(REPO)/$$f ] || { echo "molecule: cannot run, missing $$f" >&2; exit 1; }; done
	$(REPO)/extensions/molecule/run.sh test -s default

# The oldest ansible-core that requires_ansible admits (2.16): sanity, units, functional playbooks.
matrix:
	$(REPO)/hack/core-matrix

# ---------------------------------------------------------------- demo
# The demo needs what the lab needs, not the gates' extras (apt-packages.txt tags them [tests]).
demo: apt-deps-demo venv
	$(REPO)/hack/demo

apt-deps-demo:
	@$(REPO)/hack/apt-deps --demo

# ---------------------------------------------------------------- housekeeping
clean:
	rm -rf $(BUILD) $(REPO)/.cache/gates $(REPO)/.pytest_cache

distclean: clean
	rm -rf $(VENV) $(STAMP)
