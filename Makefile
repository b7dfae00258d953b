GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
# Fuzz targets run for a bounded number of inputs in `make test`, so every change is fuzzed a little. A count, not
# a duration: Go 1.26's fuzz coordinator can fail a duration-bounded run with a spurious "context deadline exceeded"
# at the deadline (golang/go#75804, fixed in Go 1.27).
FUZZTIME ?= 50000x
# The current single-node release the e2e tests run beside Debian's 1.79.5 (internal/vmtest.CurrentVersion). Build
# it once with: GOBIN=<dir> go install github.com/VictoriaMetrics/VictoriaMetrics/app/victoria-metrics@v1.151.0
# and point VM_CURRENT_BIN at <dir>/victoria-metrics; .ci/run caches it in /var/cache/vmgateway-ci/vm-v1.151.0.
VM_CURRENT_BIN ?= $(firstword $(wildcard /var/cache/vmgateway-ci/vm-v1.151.0/victoria-metrics $(HOME)/go/bin/victoria-metrics /root/vmbin/victoria-metrics))
export VM_CURRENT_BIN
# The VictoriaMetrics cluster binaries (vmstorage, vminsert, vmselect) for the cluster e2e tests: a directory in
# VMCLUSTER_BIN, else the tests unpack ../shared/vm-cluster (or VMCLUSTER_SRC) into a cache.
export VMCLUSTER_BIN VMCLUSTER_SRC

.PHONY: build test test-cluster vet fuzz soak run bench clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/vmgateway ./cmd/vmgateway

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet ./...
	# The raw-syscall files are per OS and architecture (linux/386 has no recvfrom syscall of its own): the other
	# builds a user may make must still compile, and on 32 bits the tests too (an int constant past 2^31).
	GOOS=linux GOARCH=386 $(GO) vet ./...
	GOOS=darwin GOARCH=arm64 $(GO) build ./...

# `make test` runs everything, the real-cluster scenarios included.
# A failing package prints all its output, and its last lines (what CI shows of a run) are often other tests' logs:
# the failures are printed again at the end.
test: vet
	@log=$$(mktemp); { $(GO) test -race -count=1 -timeout 30m ./... 2>&1; echo $$? >$$log.rc; } | tee $$log; \
	rc=$$(cat $$log.rc); \
	if [ "$$rc" != 0 ]; then echo "=== the failures again:"; awk -f .ci/failures.awk $$log; fi; \
	rm -f $$log $$log.rc; exit $$rc
	# Under -race, sockio reads and writes through syscall.Read/Write (the detector's annotations); its raw path runs here.
	$(GO) test -count=1 ./internal/sockio/
	$(MAKE) fuzz

# The cluster-mode end-to-end scenarios against a real vmstorage/vminsert/vmselect started by the tests
# (cmd/vmgateway/e2e_realcluster_test.go: every test named TestRealCluster*), and the cluster helper's own test.
test-cluster:
	$(GO) test -race -count=1 -timeout 20m -run '^TestRealCluster' -v ./cmd/vmgateway/
	$(GO) test -race -count=1 -run '^TestCluster' ./internal/vmtest/

# Every fuzz target in every package: a target name may repeat across packages.
fuzz:
	@for file in $$(grep -rlE '^func Fuzz[A-Za-z0-9_]+\(' --include='*_test.go' internal cmd | sort); do \
		pkg=./$$(dirname $$file); \
		for target in $$(grep -hoE '^func Fuzz[A-Za-z0-9_]+' $$file | sed 's/func //'); do \
			echo "fuzz $$target in $$pkg for $(FUZZTIME)"; \
			$(GO) test -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME) -timeout 5m $$pkg || exit 1; \
		done; \
	done

# The soak test (cmd/vmgateway/soak_test.go): about a minute of mixed reads, writes and garbage from 32 clients
# through the gateway into a real VictoriaMetrics, with a slow-upstream phase and an upstream restart; it prints
# its figures. CI runs it after `make test`. E.g. make soak SOAK_DURATION=20s.
SOAK_DURATION ?= 60s
soak:
	$(GO) vet -tags soak ./cmd/vmgateway/
	VMGATEWAY_SOAK_DURATION=$(SOAK_DURATION) $(GO) test -tags soak -run '^TestSoak$$' -count=1 -v -timeout 10m ./cmd/vmgateway/

# make run: a demo with a VictoriaMetrics of its own, or in front of one that runs: make run VM_URL=http://host:8428
run:
	@test -x bin/vmgateway || echo "==> building bin/vmgateway (the first run downloads the Go modules and compiles: a minute or two)"
	@$(MAKE) --no-print-directory build
	VM_URL=$(VM_URL) ./scripts/run.sh

# The Go benchmarks (bench-results/go-bench.txt), then the end-to-end comparison of direct access, vmgateway, vmauth,
# haproxy, nginx and a bare ReverseProxy, and the real-work round (bench/, docs/benchmarks.md). Pass its flags in BENCHFLAGS, e.g. make bench BENCHFLAGS='-duration 5s'.
bench:
	@mkdir -p bench-results
	@{ $(GO) test -run '^$$' -bench . -benchmem ./... 2>&1; echo $$? > bench-results/go-bench.rc; } | tee bench-results/go-bench.txt
	@test "$$(cat bench-results/go-bench.rc)" = 0 || { echo "the Go benchmarks failed: see bench-results/go-bench.txt"; exit 1; }
	$(GO) run ./bench -out bench-results -gobench bench-results/go-bench.txt $(BENCHFLAGS)

clean:
	rm -rf bin bench-results
	$(GO) clean -testcache

# The container image, tagged with the version (as -version and vmgateway_build_info show it) and latest.
DOCKER_IMAGE ?= vmgateway/vmgateway
.PHONY: docker
docker:
	docker build --build-arg VERSION=$(VERSION) -t $(DOCKER_IMAGE):$(VERSION) -t $(DOCKER_IMAGE):latest .
