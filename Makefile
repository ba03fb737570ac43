# shoal's build and test entry points. `make help` lists them.
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)
PKGS     := ./...
BIN      ?= bin/shoal

.PHONY: help build image test unit e2e e2e-faults lint bench bench-real deps fmt manifests fuzz fuzz-report soak k8s-bins e2e-k8s

help: ## show this help
	@awk 'BEGIN{FS=":.*## "} /^[a-z0-9-]+:.*## /{printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build the release binary bin/shoal (BIN=path to put it elsewhere); it has no test hooks
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/shoal

IMAGE    ?=
INSECURE ?=
image: ## build shoal's OCI image index (linux/amd64, linux/arm64) into bin/shoal-image.tar for `ctr images import`; IMAGE=host/repo:tag also pushes it (INSECURE=1: plain HTTP)
	$(GO) run ./deploy/internal/mkimage -out bin $(if $(IMAGE),-push $(IMAGE)) $(if $(INSECURE),-insecure)

deps: ## install what the tests need (containerd 1.6 and 2.4, docker-registry, the lab's Kubernetes); needs root
	bash .ci/install-deps.sh

k8s-bins: ## build etcd and Kubernetes v1.34.2 (apiserver, controller-manager, scheduler, kubelet) for the lab cluster into ~/.cache/shoal-k8s, only those missing
	bash scripts/k8s-bins.sh

# One package at a time: the end-to-end packages run dozens of daemons and
# containerds, and the mesh's unit tests time probes and handshakes; on two
# cores, side by side, the second starve.
test: deps ## install what the tests need, then run every test with -race, one package at a time: unit and e2e (needs root)
	$(GO) test -race -count=1 -p 1 -timeout 25m $(PKGS)

unit: ## run the tests that need no root: unit tests and the simulated benchmark (no containerd, no namespaces)
	$(GO) test -race -count=1 -short $(PKGS)

e2e: ## run only the end-to-end tests against real containerd and registry processes
	$(GO) test -race -count=1 -timeout 20m -v ./e2e/...

e2e-k8s: ## install the Helm chart on the lab's real Kubernetes (3 nodes) and check it as an operator would: shoal Ready on every node in one encrypted mesh, containerd pointed at it, a new image pulled once from the registry and shared by peers, what the kubelet ran read back from /proc, helm upgrade rolling the DaemonSet while another image scales out, helm uninstall restoring every hosts.toml (root; `make deps`)
	$(GO) test -race -count=1 -timeout 30m -v ./e2e/k8s/

e2e-faults: ## run the fault-injection suite's full variants (more nodes, bigger images, repetitions); rows in SHOAL_FAULTS_REPORT if set
	$(GO) test -race -count=1 -timeout 40m -v -run '^TestFaults$$' ./e2e/ -args -faults.full

lint: ## gofmt, go vet and go mod tidy checks
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet $(PKGS)
	$(GO) vet -tags shoalfaults ./cmd/shoal
	$(GO) mod tidy -diff

manifests: ## regenerate deploy/kubernetes from the Helm chart (go generate ./deploy)
	$(GO) generate ./deploy

SOAK ?= 10m
soak: ## run the soak for SOAK (default 10m): three nodes pull, remove and pull 12 images; memory, goroutines and fds must stay flat, no pull may fail (root)
	$(GO) test -count=1 -timeout 3h -run '^TestSoak$$' -v ./e2e/ -args -soak $(SOAK)

FUZZTIME     ?= 1m
FUZZPARALLEL ?= 1
fuzz: ## run every fuzz target for FUZZTIME each (default 1m, FUZZPARALLEL workers); crashers land in testdata/fuzz
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -parallel $(FUZZPARALLEL) $$pkg || exit 1; \
	  done; \
	done

fuzz-report: ## like fuzz, but keeps going and prints a table of target, package, duration and execs (scripts/fuzz-all.sh)
	FUZZPARALLEL=$(FUZZPARALLEL) GO=$(GO) bash scripts/fuzz-all.sh $(FUZZTIME)

bench: ## run the simulated benchmark (go run ./cmd/shoal bench)
	$(GO) run ./cmd/shoal bench

bench-real: ## run the real benchmark: namespaces, tc, real containerd, registry and shoal (root; `make deps`)
	$(GO) run ./cmd/shoal bench --real
