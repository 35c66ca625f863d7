# Skiff: one binary, a whole Kubernetes cluster.
SHELL := /bin/bash

GO          ?= go
BIN         ?= bin/skiff
PKG         := github.com/skiff-dev/skiff
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT      ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
K8S_VERSION := $(shell $(GO) list -m -f '{{.Version}}' k8s.io/kubernetes 2>/dev/null)
K8S_MINOR   := $(word 2,$(subst ., ,$(K8S_VERSION)))
BUILD_DATE  := $(shell date -u +%Y-%m-%dT%H:%M:%SZ)

# Static, reproducible builds. The same settings for build and test keep one
# build cache: the Kubernetes packages take minutes to compile from scratch.
export CGO_ENABLED := 0
export GOFLAGS     := -trimpath

K8S_VERSION_PKGS := k8s.io/component-base/version k8s.io/client-go/pkg/version
LDFLAGS := -s -w \
	-X $(PKG)/internal/version.Version=$(VERSION) \
	-X $(PKG)/internal/version.Commit=$(COMMIT) \
	$(foreach p,$(K8S_VERSION_PKGS),-X $(p).gitVersion=$(K8S_VERSION) -X $(p).gitMajor=1 -X $(p).gitMinor=$(K8S_MINOR) -X $(p).gitCommit=$(COMMIT) -X $(p).gitTreeState=clean -X $(p).buildDate=$(BUILD_DATE))

RELEASE_ARCHES := amd64 arm64 arm
DIST ?= dist
DATA_DIR ?= /var/lib/skiff

CNI_PLUGINS := $(shell sed -n 's/^\t\(github.com\/containernetworking\/plugins\/.*\)/\1/p' go.mod)
SHIM        := github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2

.PHONY: build assets run test test-deps unit e2e bench release clean

build: assets
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) .

# Programs embedded in skiff, built for the target architecture: the
# upstream CNI plugins and containerd's runc shim (with upstream's own shim
# build tags: it speaks ttrpc only). The pod sandbox (pause) program is
# written by internal/pause itself.
assets:
	mkdir -p internal/cni/bin internal/containerd/bin
	$(GO) build -ldflags '-s -w' -o internal/cni/bin/ $(CNI_PLUGINS)
	$(GO) build -tags no_grpc -ldflags '-s -w' -o internal/containerd/bin/ $(SHIM)

# A single-node cluster on the embedded SQLite default, in the foreground.
run: build
	$(BIN) server --data-dir $(DATA_DIR)

test: test-deps unit e2e

# What the end-to-end tests use from Debian, installed when missing: runc for
# the nodes, busybox-static for the test image, iproute2 for the network
# namespaces, PostgreSQL for servers sharing a datastore, qemu-user-static
# to start the arm64 release, shellcheck for the install scripts, xz-utils
# for the release's compressed files. apt does
# not start PostgreSQL's own cluster (the tests start theirs).
TEST_DEPS := runc busybox-static iproute2 postgresql qemu-user-static shellcheck xz-utils
test-deps:
	@missing=; for p in $(TEST_DEPS); do \
		dpkg-query -W -f '$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing"; \
		policy=; if [ ! -e /usr/sbin/policy-rc.d ]; then policy=1; printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; rc=$$?; \
		[ -z "$$policy" ] || rm -f /usr/sbin/policy-rc.d; \
		exit $$rc; \
	fi

unit: assets
	$(GO) test -count=1 ./internal/...

# End-to-end tests start real servers from the built binary, one test
# package at a time.
e2e: build
	SKIFF_BIN=$(abspath $(BIN)) $(GO) test -count=1 -p 1 -timeout 40m -v ./tests/...

# Service proxy sync times (1,000 Services x 10 endpoints, in a throwaway
# network namespace), then start-up, memory, pods and DNS on real servers,
# then an agent joining and the overlay's throughput on a LAN of network
# namespaces (`go run ./tests/bench -only multinode` for that part alone),
# then the release's sizes and the README's throwaway-cluster recipe timed
# from outside for the previous release and this build in turn, with the
# cold start's timeline of each (`go run ./tests/bench -only disposable`),
# and last the footprint of the previous release and of this build side by side
# (start-up, idle memory, memory with 30 pods).
bench: release build $(PREVIOUS_BIN)
	$(GO) test -run '^$$' -bench . -benchtime 10x ./internal/proxy ./internal/netpol
	SKIFF_BIN=$(abspath $(BIN)) SKIFF_PREVIOUS_BIN=$(abspath $(PREVIOUS_BIN)) $(GO) run ./tests/bench

# The previous release, for make bench's side-by-side footprint and for
# tests/upgrade (which builds it the same way when it is missing): the commit
# before the second wave of features, built from this checkout's history.
# Named skiff, as the multicall binary needs to be to run its containerd.
PREVIOUS     ?= afa1876
PREVIOUS_BIN := $(dir $(BIN))skiff-$(PREVIOUS)/skiff
$(PREVIOUS_BIN):
	mkdir -p $(dir $@)
	src=$$(mktemp -d); git archive $(PREVIOUS) | tar -x -C $$src && \
	$(MAKE) -C $$src build BIN=$(abspath $@).tmp VERSION=$(PREVIOUS) COMMIT=$(PREVIOUS); \
	rc=$$?; rm -rf $$src; [ $$rc = 0 ] && mv $@.tmp $@

# Static binaries for every architecture (arm is ARMv7, hard float), named as
# the installer downloads them, each also compressed with xz, and the
# sha256sums of all of them. xz is in every Debian and Raspberry Pi OS
# install and unpacks an armv7 binary in seconds; zstd --ultra -22 --long
# came out 12% larger. A dictionary that holds the whole binary (256 MiB to
# unpack) and the branch filters for x86 and 32-bit ARM code make each file
# a fifth of its binary or less. arm64 goes without its filter: only xz 5.4
# and later unpack it, and Debian 11 and Ubuntu 22.04 have 5.2. The three
# compress side by side.
XZ_FLAGS := --lzma2=preset=9e,dict=256MiB
release:
	mkdir -p $(DIST)
	for arch in $(RELEASE_ARCHES); do \
		export GOOS=linux GOARCH=$$arch GOARM=7; \
		$(MAKE) assets && $(GO) build -ldflags '$(LDFLAGS)' -o $(DIST)/skiff-linux-$$arch . || exit 1; \
	done
	$(MAKE) assets
	cd $(DIST) && rm -f skiff-linux-*.xz && pids= && for arch in $(RELEASE_ARCHES); do \
		filter=; case $$arch in amd64) filter=--x86 ;; arm) filter=--arm ;; esac; \
		xz -T1 -k $$filter $(XZ_FLAGS) skiff-linux-$$arch & pids="$$pids $$!"; \
	done; \
	for pid in $$pids; do wait $$pid || exit 1; done
	cd $(DIST) && sha256sum skiff-linux-* > sha256sums

clean:
	rm -rf bin dist e2e.log
