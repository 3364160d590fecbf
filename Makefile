SHELL := bash
.SHELLFLAGS := -euo pipefail -c

GO_TEST_PKGS ?= ./...

# with_kafka runs $(1) with KAFKA_BROKERS and KAFKA_VERSION set: the caller's
# KAFKA_BROKERS if set, otherwise those of a fresh single-node Apache Kafka that
# scripts/kafka.sh starts (fetching its jars from Maven Central on first use)
# and stops afterwards, even when $(1) fails. Every package's tests share it.
# Its SASL_SSL and mTLS listeners (KAFKA_SASL_SSL_BROKERS, KAFKA_MTLS_BROKERS,
# KAFKA_TLS_DIR, KAFKA_SASL_USER, KAFKA_SASL_PASSWORD) are exported too; the
# security tests skip when they are not set.
with_kafka = if [[ -z "$${KAFKA_BROKERS:-}" ]]; then \
		kafka_env=$$(scripts/kafka.sh start); eval "$$kafka_env"; \
		trap 'scripts/kafka.sh stop "$$KAFKA_DIR"' EXIT; \
		export KAFKA_BROKERS KAFKA_VERSION KAFKA_SASL_SSL_BROKERS KAFKA_MTLS_BROKERS \
			KAFKA_TLS_DIR KAFKA_SASL_USER KAFKA_SASL_PASSWORD; \
	fi; \
	echo "Apache Kafka $${KAFKA_VERSION:-?} at $$KAFKA_BROKERS"; \
	$(1)

.PHONY: all build deps prebuild test test-race test-short test-integrations demo bench bench-detector lint fmt vet fuzz kafka-fetch clean

# INTEGRATION_MODULES: modules of their own (the controllers' Kubernetes
# libraries differ from each other's), each testing canaryd with a delivery
# controller's own client code (deploy/controllers.md). go test ./... of this
# module does not enter them. integrations/kube runs a real kube-apiserver
# and etcd that scripts/kube-apiserver.sh builds from the module proxy
# (integrations/kube/apiserver pins them; it has no tests).
INTEGRATION_MODULES := integrations/argo integrations/flagger integrations/kube

all: build

# VERSION and COMMIT go into the binary (canaryd --version): the tag that
# describes HEAD (else "dev") and HEAD's commit, +dirty with local changes.
# go's own VCS stamping is not relied on: it is off with -buildvcs=false and
# in git worktrees.
VERSION ?= $(shell git describe --tags --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)$(shell git diff --quiet HEAD -- 2>/dev/null || echo +dirty)

build:
	go build -ldflags "-X main.version=$(VERSION) -X main.commit=$(COMMIT)" -o bin/canaryd ./cmd/canaryd

# DEPS_APT: Debian packages make test needs, as "command:package" pairs.
DEPS_APT := kcat:kcat mvn:maven java:openjdk-17-jre-headless openssl:openssl python3:python3 \
	python3-venv-check:python3-venv chromium:chromium chromedriver:chromium-driver promtool:prometheus haproxy:haproxy

## deps: what make test needs besides Go: kcat, Maven, Java 17, Python 3 with
## venv, headless Chromium and chromedriver (the status page's test),
## Prometheus and promtool (the metrics and dashboard tests run them)
## (installed with apt-get when run as root on Debian, otherwise named
## with the command that installs them), the broker's jars in the cache
## (scripts/kafka.sh fetch), pyarrow in a cached venv (scripts/pydeps.sh) and
## the integration modules' dependencies (go mod download in each).
## Idempotent; make test and .ci/run call it.
deps:
	@missing=(); \
	for pair in $(DEPS_APT); do \
		cmd=$${pair%%:*} pkg=$${pair#*:}; \
		if [[ $$cmd == python3-venv-check ]]; then \
			python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=("$$pkg"); \
		else \
			command -v "$$cmd" >/dev/null || missing+=("$$pkg"); \
		fi; \
	done; \
	if (( $${#missing[@]} )); then \
		if (( EUID == 0 )) && command -v apt-get >/dev/null; then \
			echo "make deps: apt-get install $${missing[*]}"; \
			export DEBIAN_FRONTEND=noninteractive; \
			apt-get update -qq && apt-get install -y -qq --no-install-recommends "$${missing[@]}" >/dev/null; \
		else \
			echo "make deps: make test needs $${missing[*]}; install them with:" >&2; \
			echo "  sudo apt-get install -y $${missing[*]}   (or run: sudo make deps)" >&2; \
			exit 1; \
		fi; \
	fi
	@scripts/kafka.sh fetch
	@scripts/pydeps.sh >/dev/null
	@for m in $(INTEGRATION_MODULES) integrations/kube/apiserver; do (cd $$m && go mod download); done

## prebuild: every module's tests compiled into the build cache without
## running them (Argo's and Flagger's Kubernetes dependencies take minutes
## from a cold cache), so that make test's time is the tests'; .ci/run calls
## it after make deps.
prebuild:
	go test -count=1 -run '^$$' ./... >/dev/null
	@echo "make prebuild: kube-apiserver and etcd (scripts/kube-apiserver.sh: minutes from a cold cache, nothing when built)"
	scripts/kube-apiserver.sh build >/dev/null
	@for m in $(INTEGRATION_MODULES); do echo "make prebuild: $$m"; (cd $$m && go test -count=1 -run '^$$' ./... >/dev/null) || exit 1; done

# TEST_P: packages whose tests run at once (go test -p); TEST_PARALLEL: tests
# of one package that run at once (those that call t.Parallel: the integration
# tests, which mostly wait on event time and the broker rather than on CPU).
# They share one broker, each on topics and groups of its own.
TEST_P ?= 2
TEST_PARALLEL ?= 4

## test: unit tests + integration tests against kfake and a real Apache Kafka
## (pyarrow, which reads the Arrow export in a test, and confluent-kafka and pytest,
## which run the Python router subscriber's tests, go into a cached venv)
test: deps
	export CANARYD_PYTHON=$$(scripts/pydeps.sh); $(call with_kafka,go test -p $(TEST_P) -parallel $(TEST_PARALLEL) -count=1 -timeout 20m $(GO_TEST_PKGS))
	@$(MAKE) --no-print-directory test-integrations

test-race: deps
	export CANARYD_PYTHON=$$(scripts/pydeps.sh); $(call with_kafka,go test -p $(TEST_P) -parallel $(TEST_PARALLEL) -race -count=1 -timeout 30m $(GO_TEST_PKGS))

## test-short: no real broker (kfake only), short statistical tests
test-short:
	CANARYD_PYTHON=$$(scripts/pydeps.sh) CANARYD_KAFKA=kfake go test -short -count=1 $(GO_TEST_PKGS)
	@$(MAKE) --no-print-directory test-integrations INTEGRATION_FLAGS=-short

## test-integrations: each integration module's tests (go test ./... in it):
## the examples in deploy/argo and deploy/flagger parsed by the controllers'
## own types and run with their own client code against a canaryd built from
## this tree (an in-process kfake broker; no real Kafka needed). Warm: about
## 75 s for both on 2 cores (Argo 35 s, 20 of them Argo's 10 s error
## retries; Flagger 10 s); from a cold build cache Argo's dependencies take
## 5-11 minutes to build, Flagger's 2. integrations/kube: route.Kube against a
## real kube-apiserver 1.37.2 and etcd 3.7.0 with the official HTTPRoute,
## VirtualService and TrafficSplit CRDs, about 10 s (the servers are built by
## make prebuild). INTEGRATION_FLAGS=-short skips the scenarios.
test-integrations:
	@for m in $(INTEGRATION_MODULES); do \
		echo "go test ./... in $$m"; \
		(cd $$m && go test -count=1 -timeout 20m $(INTEGRATION_FLAGS) ./...); \
	done

## demo: embedded broker + simulated fleet + canaryd; exits 0 when the good
## canary is promoted and the bad one rolled back
demo:
	go run ./cmd/canaryd demo

## bench: throughput and memory benchmarks, printing their figures: the decoders
## and the detector's hot spots, decode+aggregate (events/s, allocations), state
## per series and RSS over 10M events, checkpoints of 10k series (snapshot, size,
## Badger write, restore), end to end from kfake and a real Apache Kafka next
## to a consume-and-discard consumer and kcat, with checkpoints off and on, and
## two-stage aggregation's scaling (canaryd binaries on 450k OTLP records: 1
## process single-stage, 1, 2 and 4 with --two-stage; events/s, CPU s per 1M
## events, partials and their bytes, decision latency; 3 rounds, about 5 minutes)
bench:
	go test -run '^$$' -bench . -benchmem -count 1 ./schemas/ ./stream/ ./detector/ ./window/
	go test -run '^$$' -bench 'Generator|DecodeAggregate' -benchmem -count 1 ./loadtest/
	$(call with_kafka,go test -run '^$$' -bench 'StateMemory|EndToEnd|TwoStage' -benchtime 1x -count 1 -timeout 30m ./loadtest/)

## bench-detector: canaryd's suite vs a Kayenta-like judge and threshold rules on
## simulated streams, as a markdown table (JUDGEBENCH_FLAGS=-quick for the small version)
bench-detector:
	go run ./cmd/judgebench $(JUDGEBENCH_FLAGS)

fuzz:
	go test -run '^$$' -fuzz FuzzDecode -fuzztime 60s ./schemas/
	go test -run '^$$' -fuzz FuzzOTLPProto -fuzztime 30s ./stream/
	go test -run '^$$' -fuzz FuzzOTLPJSON -fuzztime 30s ./stream/
	go test -run '^$$' -fuzz FuzzTableApply -fuzztime 30s ./router/

lint: vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [[ -n "$$out" ]]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
	@for m in $(INTEGRATION_MODULES); do echo "staticcheck ./... in $$m"; (cd $$m && go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...); done

vet:
	go vet ./...
	@for m in $(INTEGRATION_MODULES); do echo "go vet ./... in $$m"; (cd $$m && go vet ./...); done

fmt:
	gofmt -w $$(git ls-files '*.go')

kafka-fetch:
	scripts/kafka.sh fetch

clean:
	rm -rf bin
