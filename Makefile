# redisraft: build the module, run the tests, run a local cluster.
CARGO ?= cargo
MODULE := redisraft.so

.PHONY: all setup build test unit integration cluster cluster-stop cluster-status clean fmt lint bench bench-quick bench-snapshot

all: build

setup:
	@scripts/setup.sh

build: setup
	$(CARGO) build --release
	cp target/release/libredisraft.so $(MODULE)

# Unit tests (storage, config, Raft driver with in-memory nodes) and
# integration tests against real redis-server processes.
test: build
	REDISRAFT_MODULE=$(CURDIR)/$(MODULE) $(CARGO) test --release -- --test-threads=2

# Side-by-side benchmark against plain Redis (10-15 min); bench-quick ~1 min.
bench: build
	MODULE=$(CURDIR)/$(MODULE) scripts/bench.sh

bench-quick: build
	QUICK=1 MODULE=$(CURDIR)/$(MODULE) scripts/bench.sh

# Snapshot benchmark (~2 min): snapshot size and time, catch-up of a new node,
# peak RSS, SET throughput while a snapshot is taken; QUICK=1 ~15 s.
bench-snapshot: build
	MODULE=$(CURDIR)/$(MODULE) scripts/bench-snapshot.sh

cluster: build
	@scripts/cluster.sh start

cluster-stop:
	@scripts/cluster.sh stop

cluster-status:
	@scripts/cluster.sh status

clean:
	-@scripts/cluster.sh clean
	$(CARGO) clean
	rm -f $(MODULE)

fmt:
	$(CARGO) fmt

lint:
	$(CARGO) clippy --all-targets -- -D warnings
