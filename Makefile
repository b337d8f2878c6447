# pbsyslog: the two commands of README.rst, and the developers' fast loop.
#   make run    install what is missing, then run the service in the foreground
#   make test   install what is missing (plus the real daemons), then run all tests
#   make check  lint (ruff), type check (mypy) and the unit tests: no root, no
#               daemons, under a minute (needs the virtualenv `make run` made)
#   make lint   lint and type check only (CI runs it before `make test`)
# run and test work on a fresh Debian 12 as root (or with sudo), with no prompts.

PYTHON ?= /usr/bin/python3
VENV   := .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian packages: to build bsddb3 against the libdb that Postfix uses, and
# the real programs the integration tests drive (postgresql and postfix-pgsql:
# the pgsql output's table and Postfix's pgsql: lookup).  The libraries on the
# last DEB_TEST line are what Debian's sendmail-bin and exim4-daemon-light need
# beyond the rest: tests/integration/mta_tools.py runs those MTAs from
# unpacked .debs (installing them would remove postfix).
DEB_BUILD := python3 python3-venv python3-dev gcc libdb5.3-dev
DEB_TEST  := rsyslog postfix dovecot-pop3d dovecot-imapd util-linux bsdutils systemd rsyslog-gnutls rsyslog-relp \
             postgresql postfix-pgsql faketime libfaketime \
             libldap-2.5-0 liblockfile1 libgnutls-dane0 libidn12

.PHONY: run test check lint deps-build deps-test venv clean

run: venv
	mkdir -p var
	$(BIN)/twistd --nodaemon --pidfile= pbsyslog --config conf/pbsyslog.toml

test: venv deps-test
	$(BIN)/python -m pytest tests

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

# The unit tests on every CPU (pytest-xdist): they share no port or file.
check: lint
	$(BIN)/python -m pytest -q -m "not integration" -p no:cacheprovider -n auto tests

# Install Debian packages only when one is missing (apt lists start empty).
define apt_ensure
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
	    | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:" $$missing; \
	    echo "postfix postfix/main_mailer_type select No configuration" | $(SUDO) debconf-set-selections; \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing </dev/null; \
	fi
endef

deps-build:
	$(call apt_ensure,$(DEB_BUILD))

deps-test: deps-build
	$(call apt_ensure,$(DEB_TEST))

venv: $(VENV)/.installed

# compat editable mode puts the checkout itself on sys.path, so Twisted finds
# twisted/plugins/pbsyslog_plugin.py; the default (strict) editable mode
# hides it and `twistd --help` would not list pbsyslog.
$(VENV)/.installed: setup.cfg pyproject.toml | deps-build
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q --config-settings editable_mode=compat -e '.[test,dev]'
	$(BIN)/twistd --help | grep pbsyslog >/dev/null || { echo "twistd does not list the pbsyslog plugin" >&2; exit 1; }
	touch $@

clean:
	rm -rf $(VENV) var build *.egg-info twisted/plugins/dropin.cache

# Benchmarks: one JSON object per figure on stdout, progress on
# stderr.  `make bench BENCH_QUICK=1` is the few-second smoke mode.
.PHONY: bench
bench: venv
	$(BIN)/python bench/run.py $(if $(filter-out 0,$(BENCH_QUICK)),--quick)
