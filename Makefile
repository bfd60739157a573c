# vmswap. `make test` installs what the tests need (Debian packages with
# apt-get, Go tools with go install), then vets and runs every test with the
# race detector. Servers the tests need are started by the tests on loopback.
SHELL   := /bin/bash
GO      ?= go
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT     := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get -y -qq -o Dpkg::Use-Pty=0
DEB_PKGS := openssh-server openssh-client haproxy bind9 bind9-utils nginx-light chromium libnss3-tools

.PHONY: build test deps vet fmt bench demo fuzz clean report-png workflows cross release-check

build:
	$(GO) build -buildvcs=true -o bin/vmswap ./cmd/vmswap

MOTO    := moto[server]==5.2.5
VENV    := .tools/venv

# deps installs the real servers the tests run against, once: OpenSSH,
# haproxy, nginx, BIND, Chromium and the NSS tools from Debian, and moto's
# AWS emulator from PyPI into a venv.
deps:
	@missing=""; for p in $(DEB_PKGS) python3-venv; do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "make deps: installing$$missing"; \
		$(APT) update >/dev/null && $(APT) install --no-install-recommends $$missing >/dev/null; \
	fi
	@if ! $(VENV)/bin/pip show moto 2>/dev/null | grep -q '^Version: 5.2.5$$'; then \
		echo "make deps: installing $(MOTO) into $(VENV)"; \
		python3 -m venv $(VENV) && $(VENV)/bin/pip install -q '$(MOTO)'; \
	fi

fmt:
	@out=$$(gofmt -l . 2>&1); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

test: deps fmt vet workflows cross release-check
	$(GO) test -race -count=1 -v -timeout 40m -parallel 4 ./... 2>&1 | tee test.log; exit $${PIPESTATUS[0]}
	$(MAKE) --no-print-directory fuzz

# workflows checks the GitHub Actions examples with actionlint (pinned).
ACTIONLINT := github.com/rhysd/actionlint/cmd/actionlint@v1.7.7
workflows:
	@GOFLAGS= $(GO) install $(ACTIONLINT)
	$$($(GO) env GOPATH)/bin/actionlint examples/github-actions/*.yml

# release-check validates .goreleaser.yaml with goreleaser (pinned: the
# newest release this Go can build), installed once into GOPATH/bin.
GORELEASER := github.com/goreleaser/goreleaser/v2
GORELEASER_VERSION := v2.15.1
release-check:
	@bin=$$($(GO) env GOPATH)/bin/goreleaser; \
	if ! $(GO) version -m $$bin 2>/dev/null | grep -q "mod.*$(GORELEASER).*$(GORELEASER_VERSION)"; then \
		echo "make: installing goreleaser $(GORELEASER_VERSION) (a few minutes, once)"; \
		GOFLAGS= $(GO) install $(GORELEASER)@$(GORELEASER_VERSION) || exit 1; \
	fi; \
	$$bin check

# cross builds vmswap for every platform people run it on.
CROSS := linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64 windows/arm64
cross:
	@for t in $(CROSS); do echo "build $$t"; GOOS=$${t%/*} GOARCH=$${t#*/} $(GO) build -o /dev/null ./cmd/vmswap || exit 1; done

# fuzz runs each fuzz target for a bounded time (CI: 10s each).
FUZZTIME ?= 10s
fuzz:
	$(GO) test ./plans/ -run '^$$' -fuzz '^FuzzCheck$$' -fuzztime $(FUZZTIME)
	$(GO) test ./plans/ -run '^$$' -fuzz '^FuzzDurationAndBudget$$' -fuzztime $(FUZZTIME)
	$(GO) test ./verify/ -run '^$$' -fuzz '^FuzzParseThreshold$$' -fuzztime $(FUZZTIME)

bench: deps
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 30m ./cmd/vmswap/ ./verify/carry/

demo:
	$(GO) run ./cmd/vmswap demo

# report-png renders a demo report (with the classic resize beside the swap)
# in headless Chromium from Debian, to look at it as a person would.
report-png:
	@command -v chromium >/dev/null || { $(APT) update >/dev/null && $(APT) install --no-install-recommends chromium >/dev/null; }
	$(GO) run ./cmd/vmswap demo --compare --report swap.html
	chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
		--disable-component-update --disable-sync --user-data-dir=$$(mktemp -d) --window-size=1100,1900 \
		--screenshot=swap.png file://$(CURDIR)/swap.html
	@echo "wrote swap.html and swap.png"

clean:
	rm -rf bin
