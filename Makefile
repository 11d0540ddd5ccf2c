# `make run` starts one node with data in ./data; `make test` runs every test.
CARGO ?= cargo
DATA_DIR ?= ./data

.PHONY: deps build run test unit compat fuzz bench bench-sql soak clean

deps:
	@scripts/install-deps.sh

build: deps
	$(CARGO) build --release --bin quarry

run: build
	./target/release/quarry serve --data-dir $(DATA_DIR)

# The profile tests build (Cargo.toml): release settings at opt-level 1, for a shorter
# cold build. Scripts find the binary under target/$(TEST_PROFILE).
TEST_PROFILE ?= testing
export QUARRY_PROFILE := $(TEST_PROFILE)

# Unit and integration tests (real sockets, real RocksDB), then real Kafka clients and
# librdkafka's own test suite (the allow-listed tests), then the fuzzer.
test: deps
	compat/install.sh
	$(CARGO) build --profile $(TEST_PROFILE) --workspace --all-targets
	$(CARGO) test --profile $(TEST_PROFILE) --workspace
	compat/run.sh
	compat/librdkafka/run.sh
	scripts/fuzz.sh 30

unit: deps
	$(CARGO) test --profile $(TEST_PROFILE) --workspace

compat: build
	QUARRY_PROFILE=release compat/run.sh
	QUARRY_PROFILE=release compat/librdkafka/run.sh

fuzz: deps
	scripts/fuzz.sh 300

bench: build
	cd bench && $(CARGO) run --release --bin produce-consume $(BENCH_ARGS)

# SQL over a 1M-record JSON topic, beside DuckDB on the same records (from PyPI).
bench-sql: build
	@[ -x bench/.venv/bin/pip ] || python3 -m venv --clear bench/.venv
	@bench/.venv/bin/python -c 'import duckdb' 2>/dev/null || bench/.venv/bin/pip install -q -r bench/requirements.txt
	cd bench && $(CARGO) run --release --bin sql

# The cluster nemesis test for 10 minutes (make test runs it for 2 minutes).
soak: deps
	QUARRY_NEMESIS_SECS=$${QUARRY_NEMESIS_SECS:-600} $(CARGO) test --profile $(TEST_PROFILE) --workspace --test integration cluster::nemesis -- --nocapture

clean:
	$(CARGO) clean
