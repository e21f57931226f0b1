# redisraft: build the module, run the tests, run a local cluster.
CARGO ?= cargo
MODULE := redisraft.so

.PHONY: all setup build test unit integration cluster cluster-stop cluster-status clean fmt lint bench bench-quick bench-snapshot bench-expiry fuzz
.PHONY: jepsen jepsen-docker jepsen-smoke crash-campaign command-table

all: build

setup:
	@scripts/setup.sh

build: setup
	$(CARGO) build --release
	cp target/release/libredisraft.so $(MODULE)

# Unit tests (storage, config, Raft driver with in-memory nodes) and
# integration tests against real redis-server processes. Tests that crash a
# node at a failpoint use the module built with failpoints (target/failpoints,
# as the Jepsen suite does).
#
# Two servers: everything on Debian's redis-server 7.0, then the integration
# tests (tests/*.rs) and a Jepsen list-append run on Valkey 8.1 (VALKEY_SERVER,
# fetched by scripts/setup.sh into target/valkey), where the newer module API
# paths run (RM_RdbLoad, ACL categories). SKIP_VALKEY=1 leaves Valkey out.
FP_TARGET_DIR ?= target/failpoints
VALKEY_SERVER ?= $(CURDIR)/target/valkey/bin/valkey-server
FP_MODULE = $(abspath $(FP_TARGET_DIR))/release/libredisraft.so
test: build
	CARGO_TARGET_DIR=$(FP_TARGET_DIR) $(CARGO) build --release -p redisraft --features failpoints
	@echo "== make test: redis-server ($$(redis-server --version | cut -d' ' -f3))"
	REDISRAFT_MODULE=$(CURDIR)/$(MODULE) REDISRAFT_FP_MODULE=$(FP_MODULE) \
		$(CARGO) test --release -- --test-threads=2
	$(MAKE) jepsen-smoke
	@if [ "$(SKIP_VALKEY)" != 1 ]; then \
		echo "== make test: valkey-server ($$($(VALKEY_SERVER) --version | cut -d' ' -f3))" && \
		REDIS_SERVER=$(VALKEY_SERVER) REDISRAFT_MODULE=$(CURDIR)/$(MODULE) REDISRAFT_FP_MODULE=$(FP_MODULE) \
			$(CARGO) test --release --test '*' -- --test-threads=2 && \
		REDIS_SERVER=$(VALKEY_SERVER) MODULE=$(CURDIR)/$(MODULE) SMOKE_ONLY=list-append \
			scripts/jepsen-smoke.sh; \
	fi

# Node-protocol fuzzers, long runs (issue 15; make test runs the short
# ones): the property-based tests with FUZZ_CASES cases each (in-memory
# nodes), then FUZZ_MESSAGES wild messages into a real 3-node cluster.
# Replay a failing integration run with PEER_FUZZ_SEED=<printed seed>.
FUZZ_CASES ?= 5000
FUZZ_MESSAGES ?= 30000
fuzz: build
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --release --lib -- node::tests::fuzz --test-threads=2
	PEER_FUZZ_MESSAGES=$(FUZZ_MESSAGES) REDISRAFT_MODULE=$(CURDIR)/$(MODULE) \
		$(CARGO) test --release --test peer_fuzz -- --test-threads=2 --nocapture

# Side-by-side benchmark against plain Redis (10-15 min), then what
# deterministic expiry costs (bench-expiry, ~3 min); bench-quick ~1 min.
bench: build
	MODULE=$(CURDIR)/$(MODULE) scripts/bench.sh
	MODULE=$(CURDIR)/$(MODULE) python3 scripts/bench/expiry.py

bench-quick: build
	QUICK=1 MODULE=$(CURDIR)/$(MODULE) scripts/bench.sh
	QUICK=1 MODULE=$(CURDIR)/$(MODULE) python3 scripts/bench/expiry.py

# SET vs SET EX, the time to expire 1M keys on every node, SET while they expire.
bench-expiry: build
	MODULE=$(CURDIR)/$(MODULE) python3 scripts/bench/expiry.py

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

# Jepsen-style safety suite (jepsen/, README "Jepsen-style safety suite").
# make jepsen: every workload (list-append, register, counter, ttl, queue) under the
# nemesis mix, 5 nodes, results in target/jepsen/<timestamp>-<workload>-<n>/,
# a table of the runs at the end; every run ends by comparing the nodes'
# RAFT.DEBUG DIGEST at one applied index (the digests column); fails if any run is
# not valid or the digests differ. The module is built with failpoints into
# target/failpoints (crash nemesis). make jepsen-docker: the same in the
# jepsen/docker containers. make jepsen-smoke: ~3 min (also in make test).
TIME ?= 120
RUNS ?= 1
NEMESIS ?= all
WORKLOAD ?= list-append register counter ttl queue

jepsen: setup
	TIME=$(TIME) RUNS=$(RUNS) NEMESIS=$(NEMESIS) WORKLOAD="$(WORKLOAD)" scripts/jepsen.sh

jepsen-docker: setup
	DOCKER=1 TIME=$(TIME) RUNS=$(RUNS) NEMESIS=$(NEMESIS) WORKLOAD="$(WORKLOAD)" scripts/jepsen.sh

jepsen-smoke: build
	CARGO_TARGET_DIR=$(FP_TARGET_DIR) $(CARGO) build --release -p redisraft --features failpoints
	MODULE=$(CURDIR)/$(MODULE) TEST_MODULE=$(abspath $(FP_TARGET_DIR))/release/libredisraft.so \
		scripts/jepsen-smoke.sh

# Crash-point campaign (scripts/crash-campaign.py; not part of make test):
# N runs per failpoint (default 50; POINTS="a b" to choose), each a 3-node
# cluster under write load, one node crashed at the point and restarted,
# then every acknowledged write checked and the digests compared. A table at
# the end; fails on any lost write, failed restart or unreached point.
# Failed runs keep their directories in target/crash-campaign/<timestamp>/.
N ?= 50
POINTS ?=
crash-campaign: setup
	CARGO_TARGET_DIR=$(FP_TARGET_DIR) $(CARGO) build --release -p redisraft --features failpoints
	MODULE=$(abspath $(FP_TARGET_DIR))/release/libredisraft.so N=$(N) POINTS="$(POINTS)" \
		python3 scripts/crash-campaign.py

# Rewrites the README's command table from the module's own classification
# (tests/command_table.rs; make test checks it is up to date).
command-table: build
	UPDATE_README=1 REDISRAFT_MODULE=$(CURDIR)/$(MODULE) $(CARGO) test --release --test command_table -- --nocapture
