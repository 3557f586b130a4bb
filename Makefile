# walua - one GNU Makefile: build, run, test, check.
#
#   make            build ./walua
#   make run        install missing Debian packages, build, serve the demo bot
#   make test       install, build, run every suite; last line "N passed, N failed"
#   make check      the same suites with ASan + UBSan
#   make install    the binary, walua(8) and an example config under PREFIX
#   make uninstall  remove them
#   make clean

LUA_PC   ?= lua5.4
MHD_PC   ?= libmicrohttpd
CJSON_PC ?= lua5.4-cjson
CURL_PC  ?= libcurl
CRYPTO_PC ?= libcrypto
SQLITE_PC ?= sqlite3
PQ_PC ?= libpq

# Debian 12 packages the build and the test suites need.
DEBS = gcc make pkg-config liblua5.4-dev libmicrohttpd-dev lua-cjson-dev \
	libcurl4-openssl-dev libssl-dev libsqlite3-dev libpq-dev python3 curl \
	postgresql-15 \
	chromium chromium-driver \
	$(FUZZ_DEBS) $(BENCH_SMOKE_DEBS)

CC      ?= cc
CFLAGS  ?= -O2 -g
WARN    = -std=c11 -Wall -Wextra -Wshadow -Wstrict-prototypes \
	-Wmissing-prototypes -Wmissing-declarations -Wwrite-strings \
	-Wpointer-arith -Wformat=2 -Wundef -Wno-unused-parameter
ifdef CI
WARN    += -Werror
endif
PKG_CFLAGS := $(shell pkg-config --cflags $(LUA_PC) $(MHD_PC) $(CJSON_PC) \
	$(CRYPTO_PC) $(SQLITE_PC) $(PQ_PC) 2>/dev/null)
# libpq and libmicrohttpd are loaded at run time, by the processes that use
# them (src/pq.h, src/mhd.h)
PKG_LIBS   := $(shell pkg-config --libs $(LUA_PC) $(CJSON_PC) \
	$(CRYPTO_PC) $(SQLITE_PC) 2>/dev/null) \
	$(shell pkg-config --libs $(CURL_PC) 2>/dev/null || echo -lcurl)
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo unknown)
WALUA_CFLAGS = $(WARN) -D_GNU_SOURCE -DWALUA_VERSION='"$(VERSION)"' \
	-Isrc -Iobj $(PKG_CFLAGS)
FINAL_CFLAGS = $(WALUA_CFLAGS) $(CFLAGS) $(SAN)
FINAL_LDFLAGS = $(LDFLAGS) $(SAN)
LIBS = $(PKG_LIBS) -lpthread -lm

ODIR ?= obj
SRCS := $(wildcard src/*.c)
LIB_OBJS := $(patsubst src/%.c,$(ODIR)/%.o,$(filter-out src/main.c src/embed.c,$(SRCS))) \
	$(ODIR)/luafiles.o
# What src/embed.c compiles into the binary: the Lua files, and the
# console's stylesheet (served as it is).
LUA_FILES := $(sort $(wildcard lua/walua/*.lua lua/examples/*.lua scripts/*.lua \
	lua/walua/console/*.css))

ifeq ($(V),1)
Q =
else
Q = @
endif

BIN ?= walua
SANITIZE = -fsanitize=address,undefined,float-cast-overflow -fno-omit-frame-pointer \
	-fno-sanitize-recover=all

.PHONY: all run test check clean deps deps-quiet test-programs install uninstall
all: deps-quiet $(BIN)

$(BIN): $(ODIR)/main.o $(LIB_OBJS)
	@echo LINK $@
	$(Q)$(CC) -o $@ $^ $(FINAL_LDFLAGS) $(LIBS)

$(ODIR)/%.o: src/%.c | $(ODIR)
	@echo CC $<
	$(Q)$(CC) $(FINAL_CFLAGS) -MMD -MP -c -o $@ $<

# The Lua half of the API is compiled into the binary as text (we load text
# only), so ./walua runs from any folder.
$(ODIR)/embed: src/embed.c | $(ODIR)
	$(Q)$(CC) -O1 -o $@ $<
$(ODIR)/luafiles.c: $(ODIR)/embed $(LUA_FILES)
	@echo EMBED $(words $(LUA_FILES)) files
	$(Q)$(ODIR)/embed $(LUA_FILES) > $@.tmp && mv $@.tmp $@
$(ODIR)/luafiles.o: $(ODIR)/luafiles.c
	$(Q)$(CC) $(FINAL_CFLAGS) -Wno-missing-prototypes -c -o $@ $<

$(ODIR):
	@mkdir -p $(ODIR)

# `walua version` names the commit it was built from: main.o is rebuilt
# when that changes (the file is rewritten only then).
$(ODIR)/version: FORCE | $(ODIR)
	$(Q)echo '$(VERSION)' | cmp -s - $@ || echo '$(VERSION)' > $@
$(ODIR)/main.o: $(ODIR)/version
.PHONY: FORCE
FORCE:

# Test programs: one per C module, plus the Lua test runner.
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(patsubst tests/unit/%.c,$(ODIR)/tests/%,$(UNIT_SRCS))
$(ODIR)/tests/%: tests/unit/%.c $(LIB_OBJS)
	@mkdir -p $(ODIR)/tests
	@echo CC $<
	$(Q)$(CC) $(FINAL_CFLAGS) -o $@ $^ $(FINAL_LDFLAGS) $(LIBS)
$(ODIR)/tests/lua_runner: tests/lua_runner.c $(LIB_OBJS)
	@mkdir -p $(ODIR)/tests
	@echo CC $<
	$(Q)$(CC) $(FINAL_CFLAGS) -o $@ $^ $(FINAL_LDFLAGS) $(LIBS)

test-programs: $(BIN) $(UNIT_BINS) $(ODIR)/tests/lua_runner

# Install what a fresh Debian 12 lacks (we run as root in CI; otherwise sudo).
deps:
	@missing=""; for p in $(DEBS); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" \
			|| missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
deps-quiet:
	@command -v dpkg-query >/dev/null 2>&1 && $(MAKE) --no-print-directory deps || true

run: deps
	$(MAKE) --no-print-directory walua
	./walua serve

# The suites (tests/run.py): C units, Lua, integration, a short run of
# every fuzz target under ASan+UBSan (about 20 s; WALUA_NO_FUZZ=1 skips it)
# and a smoke run of the benchmark harness (WALUA_NO_BENCH=1 skips it).
test: deps
	$(MAKE) --no-print-directory test-programs fuzz-programs
	python3 tests/run.py

# The same suites, everything built with ASan and UBSan in obj/asan.
# SAN and CFLAGS reach the suites' own makes (the bench smoke's) too: a
# file changed meanwhile is rebuilt with the sanitizers, not without.
check: deps
	$(MAKE) --no-print-directory ODIR=obj/asan BIN=obj/asan/walua \
		SAN="$(SANITIZE)" CFLAGS="-O1 -g" test-programs fuzz-programs
	WALUA_BIN=obj/asan/walua WALUA_TESTBIN=obj/asan/tests \
		WALUA_ODIR=obj/asan ASAN_OPTIONS=detect_leaks=1 \
		SAN="$(SANITIZE)" CFLAGS="-O1 -g" python3 tests/run.py

# make install [PREFIX=/usr/local] [DESTDIR=...]: the files walua(8) lists
# under FILES.  The systemd units in contrib/ are not installed: they name
# a user and paths each site chooses (README, "Running in production").
PREFIX  ?= /usr/local
BINDIR  = $(PREFIX)/bin
MANDIR  = $(PREFIX)/share/man/man8
DOCDIR  = $(PREFIX)/share/doc/walua
INSTALLED = $(DESTDIR)$(BINDIR)/walua $(DESTDIR)$(MANDIR)/walua.8 \
	$(DESTDIR)$(DOCDIR)/walua.conf.lua $(DESTDIR)$(DOCDIR)/walua.service \
	$(DESTDIR)$(DOCDIR)/walua.socket

# Installs the binary built by `make` (BIN=... another one) as it is.
install:
	@test -x $(BIN) || { echo "no $(BIN): run make first"; exit 1; }
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR) $(DESTDIR)$(DOCDIR)
	install -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/walua
	install -m 0644 contrib/walua.8 $(DESTDIR)$(MANDIR)/walua.8
	install -m 0644 contrib/walua.conf.lua $(DESTDIR)$(DOCDIR)/walua.conf.lua
	install -m 0644 contrib/walua.service contrib/walua.socket $(DESTDIR)$(DOCDIR)/

uninstall:
	rm -f $(INSTALLED)
	-rmdir $(DESTDIR)$(DOCDIR) 2>/dev/null

clean:
	rm -rf obj walua

-include $(wildcard $(ODIR)/*.d)
include tests/fuzz/fuzz.mk
include tests/bench/bench.mk
