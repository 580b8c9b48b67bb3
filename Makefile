# Two commands: `make demo` and `make test`. Both set themselves up on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install browser nginx pgclient sshd client-guides client-guides-tools softhsm bench bench-linkage bench-scale bench-push bench-load bench-portal client-dist clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# node-soap for the interoperability tests (tests/interop), pinned by package-lock.json; no global
# installs. Without node the tests skip themselves.
NODE_INTEROP := tests/interop/node
NODE_STAMP := $(NODE_INTEROP)/node_modules/.installed

# After client-guides-tools, which installs Node.js and npm when missing (else, on a fresh machine,
# these tests would skip on the first `make test`).
$(NODE_STAMP): $(NODE_INTEROP)/package.json $(NODE_INTEROP)/package-lock.json | client-guides-tools
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix $(NODE_INTEROP) --no-audit --no-fund --loglevel=error && touch $(NODE_STAMP) \
		|| echo "npm ci failed in $(NODE_INTEROP): the node-soap interoperability tests will be skipped"; \
	else echo "npm not found: the node-soap interoperability tests will be skipped"; fi

# panva's oidc-provider (a certified OpenID provider) for the portal's federated sign-in tests
# (tests/gateway/portal/test_portal_oidc*.py start it on 127.0.0.1), pinned by package-lock.json.
IDP_NODE := tests/gateway/portal/idp
IDP_STAMP := $(IDP_NODE)/node_modules/.installed

$(IDP_STAMP): $(IDP_NODE)/package.json $(IDP_NODE)/package-lock.json | client-guides-tools
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix $(IDP_NODE) --no-audit --no-fund --loglevel=error && touch $(IDP_STAMP) \
		|| echo "npm ci failed in $(IDP_NODE): the federated sign-in tests will be skipped"; \
	else echo "npm not found: the federated sign-in tests will be skipped"; fi

# axe-core for the accessibility checks in the portal's browser tests (tests/gateway/portal/test_portal_a11y.py),
# pinned by package-lock.json and read from node_modules into the page under test; no global installs.
# Without it those checks skip, except under .ci/run.
A11Y := tests/a11y
A11Y_STAMP := $(A11Y)/node_modules/.installed

$(A11Y_STAMP): $(A11Y)/package.json $(A11Y)/package-lock.json | client-guides-tools
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix $(A11Y) --no-audit --no-fund --loglevel=error && touch $(A11Y_STAMP) \
		|| echo "npm ci failed in $(A11Y): the accessibility checks will be skipped"; \
	else echo "npm not found: the accessibility checks will be skipped"; fi

# The distribution's Chromium for the console's browser tests (tests/gateway/console/test_console_browser.py,
# Playwright driving the system binary: Playwright's own browser download is not used). Installed when
# missing and this user may (root with apt-get); otherwise those tests skip, except under .ci/run.
browser:
	@if ! command -v chromium >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing chromium (apt-get)"; \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
			|| { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }; \
		else echo "chromium not found and cannot be installed here: the browser tests will be skipped"; fi; \
	fi

# The distribution's nginx with its njs module, for the production layout's tests (tests/deploy: nginx in
# front of two gateway nodes). Installed when missing and this user may (root with apt-get), without
# letting the package start its own nginx service; otherwise those tests skip, except under .ci/run.
NGINX_JS := /usr/lib/nginx/modules/ngx_http_js_module.so
nginx:
	@if [ ! -x /usr/sbin/nginx ] || [ ! -f $(NGINX_JS) ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing nginx and libnginx-mod-http-js (apt-get)"; \
			made_policy=; if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d \
				&& chmod +x /usr/sbin/policy-rc.d && made_policy=1; fi; \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx libnginx-mod-http-js >/dev/null \
			|| { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx libnginx-mod-http-js >/dev/null; }; \
			status=$$?; [ -n "$$made_policy" ] && rm -f /usr/sbin/policy-rc.d; exit $$status; \
		else echo "nginx not found and cannot be installed here: the tests of nginx in front will be skipped"; fi; \
	fi

# The distribution's PostgreSQL client tools (pg_dump, pg_restore): `contactgate backup` and `restore`
# on PostgreSQL use them. Installed when missing and this user may (root with apt-get); otherwise
# the PostgreSQL backup tests skip, except under .ci/run.
pgclient:
	@if ! command -v pg_dump >/dev/null 2>&1 || ! command -v pg_restore >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing postgresql-client (apt-get)"; \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql-client >/dev/null \
			|| { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql-client >/dev/null; }; \
		else echo "pg_dump not found and cannot be installed here: the PostgreSQL backup tests will be skipped"; fi; \
	fi

# The distribution's OpenSSH server, for the SFTP source's tests (tests/connectors/test_scheduled_sources.py
# starts its own sshd on 127.0.0.1 with its own host key and config). Installed when missing and this
# user may (root with apt-get), without letting the package start its own ssh service; otherwise those
# tests skip, except under .ci/run.
sshd:
	@if [ ! -x /usr/sbin/sshd ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing openssh-server (apt-get)"; \
			made_policy=; if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d \
				&& chmod +x /usr/sbin/policy-rc.d && made_policy=1; fi; \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssh-server >/dev/null \
			|| { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssh-server >/dev/null; }; \
			status=$$?; [ -n "$$made_policy" ] && rm -f /usr/sbin/policy-rc.d; exit $$status; \
		else echo "sshd not found and cannot be installed here: the SFTP source's tests will be skipped"; fi; \
	fi

# The distribution's SoftHSM2 (a PKCS#11 token in software): the tests of keys held in a hardware
# security module (tests/gateway/security/test_hsm.py) initialise a token of their own with it.
# Installed when missing and this user may (root with apt-get); otherwise those tests skip, except under .ci/run.
softhsm:
	@if ! command -v softhsm2-util >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing softhsm2 (apt-get)"; \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q softhsm2 >/dev/null \
			|| { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q softhsm2 >/dev/null; }; \
		else echo "softhsm2-util not found and cannot be installed here: the PKCS#11 tests will be skipped"; fi; \
	fi

# The toolchains of the client guides (docs/clients, run by tests/docs/clients): curl + xmlsec1 +
# xmllint, PHP with soap and dom, a JDK with Debian's JAX-WS RI and WSS4J 1.6 jars, Node.js and npm
# (apt-get when missing and this user may: root with apt-get), then node-soap pinned by the guide's
# package-lock.json (npm ci, no global installs). Each toolchain is installed on its own: one that
# cannot be installed (or an npm ci that fails) leaves its guides' tests to skip, except under .ci/run,
# which requires them all, and does not stop `make test`.
GUIDE_NODE := docs/clients/node-soap
GUIDE_NODE_STAMP := $(GUIDE_NODE)/node_modules/.installed

client-guides-tools:
	@for toolchain in "curl:curl xmlsec1:xmlsec1 xmllint:libxml2-utils openssl:openssl" \
		"php:php-cli php-module-soap:php-soap php-module-dom:php-xml" \
		"javac:default-jdk-headless /usr/share/java/jaxws-rt.jar:libjaxws-java /usr/share/java/wss4j.jar:libwss4j-java" \
		"node:nodejs npm:npm"; do \
		need=; for item in $$toolchain; do what=$${item%%:*}; \
			case $$what in \
				/*) [ -f $$what ] ;; \
				php-module-*) command -v php >/dev/null 2>&1 && php -m | grep -qx $${what#php-module-} ;; \
				*) command -v $$what >/dev/null 2>&1 ;; \
			esac || need="$$need $${item#*:}"; done; \
		[ -z "$$need" ] && continue; \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing a client guide's toolchain (apt-get):$$need"; \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$need >/dev/null \
			|| { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$need >/dev/null; } \
			|| echo "could not install$$need: those client guides' tests will be skipped"; \
		else echo "missing$$need and cannot install them here: those client guides' tests will be skipped"; fi; \
	done

$(GUIDE_NODE_STAMP): $(GUIDE_NODE)/package.json $(GUIDE_NODE)/package-lock.json | client-guides-tools
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix $(GUIDE_NODE) --no-audit --no-fund --loglevel=error && touch $(GUIDE_NODE_STAMP) \
		|| echo "npm ci failed in $(GUIDE_NODE): the node-soap client guide's test will be skipped"; \
	else echo "npm not found: the node-soap client guide's test will be skipped"; fi

client-guides: client-guides-tools $(GUIDE_NODE_STAMP)

demo: $(STAMP)
	$(BIN)/contactgate demo

# The suite runs in TEST_WORKERS processes (pytest-xdist), a test file to a process: the tests spend
# much of their time waiting on servers they start, and each makes its own databases, keys, homes
# and ports. TEST_WORKERS=0 runs it in this one process. At most 4 (each runs gateways with their own
# pools of PostgreSQL connections: PostgreSQL's default limit is 100).
# Files are handed out in collection order (--no-loadscope-reorder: xdist would otherwise hand out
# the files with the most tests first, and so the long files of few tests, a browser's or the
# operations page's, last), and tests/heavy_first.py collects the longest files first.
TEST_WORKERS ?= auto
test: $(STAMP) $(NODE_STAMP) $(IDP_STAMP) $(A11Y_STAMP) browser nginx pgclient sshd client-guides softhsm
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --maxprocesses 4 --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/throughput.py

# Linkage quality through the real gateway (bench/linkage.py); e.g. make bench-linkage LINKAGE_ARGS="--mix harsh"
bench-linkage: $(STAMP)
	$(BIN)/python bench/linkage.py $(LINKAGE_ARGS)

# The index at national scale on PostgreSQL (bench/index_scale.py); e.g. make bench-scale SCALE_ARGS="--children 100000"
bench-scale: $(STAMP)
	$(BIN)/python bench/index_scale.py $(SCALE_ARGS)

# The practitioners' portal under load (bench/portal.py): 50 signed-in practitioners, alone and with SOAP alongside;
# e.g. make bench-portal PORTAL_ARGS="--users 20 --seconds 30"
bench-portal: $(STAMP)
	$(BIN)/python bench/portal.py $(PORTAL_ARGS)

# The contactgate-client wheel (SDK, mappings, push; no server) into dist/ (packaging/client/build.py)
client-dist: $(STAMP)
	$(BIN)/python packaging/client/build.py --out dist

# contactgate push of a 100,000-row extract end to end (bench/push.py); e.g. make bench-push PUSH_ARGS="--rows 20000"
bench-push: $(STAMP)
	$(BIN)/python bench/push.py $(PUSH_ARGS)

# contactgate load against the online path, side by side (bench/load.py); e.g. make bench-load LOAD_ARGS="--children 100000"
bench-load: $(STAMP)
	$(BIN)/python bench/load.py $(or $(LOAD_ARGS),--children 10000 --children 100000)

clean:
	rm -rf $(VENV) var build dist *.egg-info $(NODE_INTEROP)/node_modules $(IDP_NODE)/node_modules $(GUIDE_NODE)/node_modules

	rm -rf $(VENV) var build dist *.egg-info $(NODE_INTEROP)/node_modules $(GUIDE_NODE)/node_modules $(A11Y)/node_modules
