# tests/bench/bench.mk - the benchmark (tests/bench/README.md); included by
# the main Makefile after its variables (it uses BIN, ODIR, MHD_PC, CC, Q).
#
#   make bench          install BENCH_DEBS if missing, build, run floor,
#                       nginx + lua, node and walua (normal, full; 1 and 2
#                       workers): 3 interleaved rounds of 10 s each; then
#                       the I/O scenario (handlers waiting on a backend
#                       that answers after 100 ms, then 1 s; walua beside
#                       Node); prints the tables and writes
#                       tests/bench/RESULTS.md; then bench_pg.py: walua
#                       on SQLite, one and two instances on PostgreSQL
#                       (its own section of RESULTS.md; BENCH_PG=0: not)
#   make bench BENCH_SECONDS=5 BENCH_ROUNDS=1 BENCH_PLAN="floor walua-normal-w1"
#   make bench BENCH_PLAN=io     the I/O scenario alone (io:100ms: one delay)
#   make bench-smoke    one round, 2 s per server, keep-alive text only:
#                       floor, walua (normal) and the peers that are
#                       installed; then the I/O scenario with 100 events
#                       at 100 ms; fails only if a server does not start
#                       or answers non-2xx (targets are never asserted)
#
# tests/bench/README.md describes what is measured and how.

BENCH_DEBS = wrk nginx libnginx-mod-http-lua libnginx-mod-http-ndk \
	nodejs lua-cjson util-linux
# what bench-smoke cannot do without (the peers are skipped when missing)
BENCH_SMOKE_DEBS = wrk util-linux

BENCH_ODIR = $(ODIR)/bench
BENCH_FLOOR = $(BENCH_ODIR)/floor
BENCH_IO_BACKEND = $(BENCH_ODIR)/io_backend
BENCH_DECODE = $(BENCH_ODIR)/decode
BENCH_ENV = WALUA_BIN="$(BIN)" BENCH_FLOOR="$(BENCH_FLOOR)" \
	BENCH_IO_BACKEND="$(BENCH_IO_BACKEND)" BENCH_DECODE="$(BENCH_DECODE)"

# Decoding alone (tests/bench/decode.c): walua's own objects, as a unit
# test links them.
$(BENCH_DECODE): tests/bench/decode.c $(LIB_OBJS)
	@mkdir -p $(BENCH_ODIR)
	@echo CC $<
	$(Q)$(CC) $(FINAL_CFLAGS) -o $@ $^ $(FINAL_LDFLAGS) $(LIBS)

.PHONY: bench bench-smoke bench-deps bench-smoke-deps

# The floor and the I/O scenario's backend are built in the recipes
# below, not by rules of their own, so a sub-make (which reads only the
# main Makefile) is never asked for them.
define bench_floor
	@mkdir -p $(BENCH_ODIR)
	$(Q)if [ ! -x $(BENCH_FLOOR) ] || [ tests/bench/floor.c -nt $(BENCH_FLOOR) ]; \
	then echo CC tests/bench/floor.c; \
		$(CC) -O2 -g -std=c11 -Wall -Wextra -D_GNU_SOURCE \
		$$(pkg-config --cflags $(MHD_PC)) -o $(BENCH_FLOOR) \
		tests/bench/floor.c $$(pkg-config --libs $(MHD_PC)); \
	fi
	$(Q)if [ ! -x $(BENCH_IO_BACKEND) ] || \
		[ tests/bench/io_backend.c -nt $(BENCH_IO_BACKEND) ]; \
	then echo CC tests/bench/io_backend.c; \
		$(CC) -O2 -g -std=c11 -Wall -Wextra -D_GNU_SOURCE \
		-o $(BENCH_IO_BACKEND) tests/bench/io_backend.c; \
	fi
endef

# $(call bench_install,PACKAGES): apt-get install what dpkg lacks
define bench_install
	@missing=""; for p in $(1); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" \
			|| missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
			$$missing; \
	fi
endef

bench-deps:
	$(call bench_install,$(BENCH_DEBS))
bench-smoke-deps:
	$(call bench_install,$(BENCH_SMOKE_DEBS))

bench: bench-deps
	$(MAKE) --no-print-directory $(BIN) $(BENCH_DECODE)
	$(bench_floor)
	$(BENCH_ENV) BENCH_COMMAND="make bench" python3 tests/bench/bench.py
	$(Q)if [ "$(BENCH_PG)" != 0 ]; then \
		$(BENCH_ENV) python3 tests/bench/bench_pg.py; fi

bench-smoke: bench-smoke-deps
	$(MAKE) --no-print-directory $(BIN) $(BENCH_DECODE)
	$(bench_floor)
	$(BENCH_ENV) BENCH_COMMAND="make bench-smoke" \
		python3 tests/bench/bench.py --smoke
	$(BENCH_ENV) BENCH_SECONDS=2 python3 tests/bench/bench_pg.py --smoke
