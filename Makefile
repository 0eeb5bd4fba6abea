# AgentKeys enclave broker. `make dev` runs it locally; `make test` runs every test.
GO       ?= go
BIN      ?= bin
FUZZTIME ?= 3s
# Packages whose fuzz targets `make fuzz` runs (each target for FUZZTIME).
FUZZPKGS ?= $(sort $(patsubst %/,%,$(dir $(shell grep -rl --include='*_test.go' '^func Fuzz' . 2>/dev/null))))

.PHONY: all build deps test unit vet fmt-check fuzz dev clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ ./enclave/cmd/... ./host/cmd/... ./attest/cmd/...

test: deps fmt-check vet unit fuzz

# Tests build helpers (Pebble, litewitness) from the module cache: fill it first.
deps:
	$(GO) mod download

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

unit:
	$(GO) test -race -count=1 ./...

# Run every fuzz target for FUZZTIME: decoders of bytes from across a trust boundary.
fuzz:
	@FUZZTIME=$(FUZZTIME) scripts/fuzz.sh $(FUZZPKGS)

# A simulated enclave and the host on http://127.0.0.1:8091 until Ctrl-C.
dev: build
	@scripts/dev.sh

clean:
	rm -rf $(BIN)
