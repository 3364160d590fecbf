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

.PHONY: all build test test-race test-short demo bench bench-detector lint fmt vet fuzz kafka-fetch clean

all: build

build:
	go build -o bin/canaryd ./cmd/canaryd

## test: unit tests + integration tests against kfake and a real Apache Kafka
## (pyarrow, which reads the Arrow export in a test, goes into a cached venv)
test:
	export CANARYD_PYTHON=$$(scripts/pydeps.sh); $(call with_kafka,go test -count=1 -timeout 20m $(GO_TEST_PKGS))

test-race:
	export CANARYD_PYTHON=$$(scripts/pydeps.sh); $(call with_kafka,go test -race -count=1 -timeout 30m $(GO_TEST_PKGS))

## test-short: no real broker (kfake only), short statistical tests
test-short:
	CANARYD_PYTHON=$$(scripts/pydeps.sh) CANARYD_KAFKA=kfake go test -short -count=1 $(GO_TEST_PKGS)

## demo: embedded broker + simulated fleet + canaryd; exits 0 when the good
## canary is promoted and the bad one rolled back
demo:
	go run ./cmd/canaryd demo

## bench: throughput and memory benchmarks, printing their figures: the decoders
## and the detector's hot spots, decode+aggregate (events/s, allocations), state
## per series and RSS over 10M events, checkpoints of 10k series (snapshot, size,
## Badger write, restore), and end to end from kfake and a real Apache Kafka next
## to a consume-and-discard consumer and kcat, with checkpoints off and on
bench:
	go test -run '^$$' -bench . -benchmem -count 1 ./schemas/ ./stream/ ./detector/ ./window/
	go test -run '^$$' -bench 'Generator|DecodeAggregate' -benchmem -count 1 ./loadtest/
	$(call with_kafka,go test -run '^$$' -bench 'StateMemory|EndToEnd' -benchtime 1x -count 1 -timeout 30m ./loadtest/)

## bench-detector: canaryd's suite vs a Kayenta-like judge and threshold rules on
## simulated streams, as a markdown table (JUDGEBENCH_FLAGS=-quick for the small version)
bench-detector:
	go run ./cmd/judgebench $(JUDGEBENCH_FLAGS)

fuzz:
	go test -run '^$$' -fuzz FuzzDecode -fuzztime 60s ./schemas/
	go test -run '^$$' -fuzz FuzzOTLPProto -fuzztime 30s ./stream/
	go test -run '^$$' -fuzz FuzzOTLPJSON -fuzztime 30s ./stream/

lint: vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [[ -n "$$out" ]]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

vet:
	go vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

kafka-fetch:
	scripts/kafka.sh fetch

clean:
	rm -rf bin
