# kern — the two commands that matter: `make demo` and `make test`.
GO      ?= go
TIMEOUT ?= 12m

.PHONY: test demo vet bench fmt

## test: vet, then every test with the race detector, against real Postgres.
test: vet
	$(GO) test -race -count=1 -timeout $(TIMEOUT) ./...

## demo: the seed scenarios end to end, offline (fake model, throwaway Postgres
## unless DATABASE_URL is set).
demo:
	$(GO) run ./cookbook/background_execution
	$(GO) run ./cookbook/streaming

vet:
	$(GO) vet ./...
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi

## bench: the Go benchmarks (figures in README.md).
bench:
	$(GO) test -run '^$$' -bench . -benchtime 2000x ./agent/

fmt:
	gofmt -w $$(git ls-files '*.go')
