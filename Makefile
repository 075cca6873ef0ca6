# `make run` starts the panel on embedded defaults; `make test` runs every check.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# pytest-xdist workers for the suite, each in its own process with its own databases, Redis
# database, ports and Docker names (docs/development.md#tests-in-parallel); 0 runs it in one
# process. Whole test files go to one worker (module fixtures start once), slowest first
# (tests/conftest.py SLOW_FILES_FIRST; xdist would otherwise deal the files with most tests first).
PYTEST_WORKERS ?= 4
PYTEST_PARALLEL = $(if $(filter-out 0,$(PYTEST_WORKERS)),-n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder)
# Material's end-of-life banner on every build says nothing about these docs.
MKDOCS := NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs

.PHONY: run test docs lint format install migrate bench clean base-image

$(STAMP): requirements.txt requirements-seaweedfs.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --require-hashes -r requirements-seaweedfs.txt
	@touch $(STAMP)

install: $(STAMP)

migrate: $(STAMP)
	$(PY) manage.py migrate --noinput

run: migrate
	$(PY) manage.py bootstrap
	$(PY) manage.py runpanel

test: $(STAMP)
	@bash .ci/parts-up
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) manage.py check
	$(PY) manage.py makemigrations --check --dry-run
	$(MKDOCS) build --strict
	$(VENV)/bin/pytest $(PYTEST_PARALLEL)

# The docs site in site/, built strictly (mkdocs.yml): a broken link or anchor, a page left out
# of the nav or a setting missing from docs/settings.md fails it. Never with --quiet: it drops
# the warnings before strict mode counts them, and a broken link passes.
docs: $(STAMP)
	$(MKDOCS) build --strict

lint: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

format: lint

# The pod base image, made without a registry: a busybox-static rootfs through `docker import`.
POD_IMAGE ?= pinacle-base:latest
base-image:
	@bb=$$(command -v busybox || echo /bin/busybox); test -x "$$bb" || { echo "install Debian's busybox-static first"; exit 1; }; \
	root=$$(mktemp -d); mkdir -p $$root/bin $$root/etc $$root/tmp $$root/root $$root/home $$root/usr/local $$root/opt $$root/var $$root/srv $$root/workspace; \
	cp "$$bb" $$root/bin/busybox; for applet in $$("$$bb" --list); do [ -e $$root/bin/$$applet ] || ln -s busybox $$root/bin/$$applet; done; \
	echo 'root:x:0:0:root:/root:/bin/sh' > $$root/etc/passwd; echo 'root:x:0:' > $$root/etc/group; \
	tar -C $$root -c . | docker import --change 'CMD ["/bin/sh"]' - $(POD_IMAGE); rm -rf $$root; \
	echo "built $(POD_IMAGE)"

bench: $(STAMP)
	@for script in bench/*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache site
