SHELL := bash
.SHELLFLAGS := -euo pipefail -c

GO_TEST_PKGS ?= ./...
BENCH_TIME ?= 1x

# with_kafka runs $(1) with KAFKA_BROKERS and KAFKA_VERSION set: the caller's
# KAFKA_BROKERS if set, otherwise those of a fresh single-node Apache Kafka that
# scripts/kafka.sh starts (fetching its jars from Maven Central on first use)
# and stops afterwards, even when $(1) fails. Every package's tests share it.
with_kafka = if [[ -z "$${KAFKA_BROKERS:-}" ]]; then \
		kafka_env=$$(scripts/kafka.sh start); eval "$$kafka_env"; \
		trap 'scripts/kafka.sh stop "$$KAFKA_DIR"' EXIT; \
		export KAFKA_BROKERS KAFKA_VERSION; \
	fi; \
	echo "Apache Kafka $${KAFKA_VERSION:-?} at $$KAFKA_BROKERS"; \
	$(1)

.PHONY: all build test test-race test-short demo bench lint fmt vet fuzz kafka-fetch clean

all: build

build:
	go build -o bin/canaryd ./cmd/canaryd

## test: unit tests + integration tests against kfake and a real Apache Kafka
test:
	$(call with_kafka,go test -count=1 -timeout 20m $(GO_TEST_PKGS))

test-race:
	$(call with_kafka,go test -race -count=1 -timeout 30m $(GO_TEST_PKGS))

## test-short: no real broker (kfake only), short statistical tests
test-short:
	CANARYD_KAFKA=kfake go test -short -count=1 $(GO_TEST_PKGS)

## demo: embedded broker + simulated fleet + canaryd; exits 0 when the good
## canary is promoted and the bad one rolled back
demo:
	go run ./cmd/canaryd demo

## bench: throughput and memory benchmarks, printing their figures
bench:
	$(call with_kafka,go test -run '^$$' -bench . -benchtime $(BENCH_TIME) -count 1 -timeout 30m ./loadtest/ ./schemas/ ./window/)

fuzz:
	go test -run '^$$' -fuzz FuzzDecode -fuzztime 60s ./schemas/

lint: vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [[ -n "$$out" ]]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go run honnef.co/go/tools/cmd/staticcheck@2025.1.1 ./...

vet:
	go vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

kafka-fetch:
	scripts/kafka.sh fetch

clean:
	rm -rf bin
