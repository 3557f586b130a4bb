# tests/fuzz/fuzz.mk - libFuzzer targets; included by the main Makefile,
# after its variables (it uses SRCS, ODIR, WALUA_CFLAGS, LIBS and Q).
#
#   make fuzz                  each target for $(FUZZ_SECONDS) s (default 60)
#   make fuzz FUZZ_SECONDS=600 FUZZ_TARGETS=normalize
#   make fuzz FUZZ_OPTS='-fork=2 -ignore_crashes=1'   past known crashes
#   make fuzz-smoke            replay tests/fuzz/regressions, then each target
#                              for $(FUZZ_SMOKE_SECONDS) s: ~20 s in all
#
# Both exit non-zero on any crash, leak, sanitizer report or timeout; the
# input is then in obj/fuzz/artifacts/TARGET/ and the log in
# obj/fuzz/TARGET.log (tests/fuzz/README.md: how to make it a regression).
#
# The targets are built with clang's libFuzzer, ASan and UBSan, from the
# project's own sources compiled again into obj/fuzz/ (gcc cannot
# instrument for libFuzzer).  Debian 12 packages: clang (clang-14) and
# libclang-rt-14-dev (libFuzzer and the sanitizer runtimes); the main
# Makefile's DEBS can add $(FUZZ_DEBS).

FUZZ_DEBS = clang libclang-rt-14-dev

FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 5
FUZZ_TARGETS ?= normalize auth token config
FUZZ_ODIR = $(ODIR)/fuzz

# Largest input per target: a webhook body is up to limits.max_body, but
# 64 KiB covers every structure the normalizer knows; headers, token
# requests and configurations are small.
FUZZ_MAXLEN_normalize = 65536
FUZZ_MAXLEN_auth = 4096
FUZZ_MAXLEN_token = 4096
FUZZ_MAXLEN_config = 4096

FUZZ_SAN = -fsanitize=address,undefined -fno-omit-frame-pointer \
	-fno-sanitize-recover=all
# The main build's flags and warnings, but never -Werror: gcc's build is the
# one that gates, and clang warns where gcc does not (-Wformat-nonliteral
# on a va_list passed on by a function without a format attribute).
FUZZ_CFLAGS = $(filter-out -Werror,$(WALUA_CFLAGS)) -O1 -g $(FUZZ_SAN)
# The project's code is instrumented for coverage; the targets' main comes
# from libFuzzer at link.  --wrap gives the Lua states the coverage hook
# of tests/fuzz/fuzzlib.c.
FUZZ_LDFLAGS = $(FUZZ_SAN) -fsanitize=fuzzer -Wl,--wrap=luaL_newstate

# UBSan reports are fatal (-fno-sanitize-recover) and need a stack to be
# read; a slow input is a hang after 10 s, not after libFuzzer's 20 min.
# The scratch folders of the token and config targets go in obj/fuzz/tmp,
# where a crashed run leaves its folder for make clean to remove.
FUZZ_ENV = UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	TMPDIR=$(abspath $(FUZZ_ODIR)/tmp)
FUZZ_FLAGS = -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 $(FUZZ_OPTS)
# Most token requests grow state kept on purpose (the token cache,
# SQLite's page cache), and libFuzzer then runs a full LeakSanitizer pass
# per new input: 30 times slower.  The pass at exit still fails the run on
# a leak; rerun with -detect_leaks=1 to find the input.
FUZZ_FLAGS_token = -detect_leaks=0

FUZZ_LIB_OBJS := $(patsubst src/%.c,$(FUZZ_ODIR)/%.o,\
	$(filter-out src/main.c src/embed.c,$(SRCS))) $(FUZZ_ODIR)/luafiles.o
FUZZ_BINS := $(patsubst %,$(FUZZ_ODIR)/fuzz_%,$(FUZZ_TARGETS))

.PHONY: fuzz fuzz-smoke fuzz-programs fuzz-replay
fuzz-programs: $(FUZZ_BINS)

$(FUZZ_ODIR):
	@mkdir -p $(FUZZ_ODIR)

$(FUZZ_ODIR)/%.o: src/%.c | $(FUZZ_ODIR)
	@echo FUZZCC $<
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP \
		-c -o $@ $<
$(FUZZ_ODIR)/luafiles.o: $(ODIR)/luafiles.c | $(FUZZ_ODIR)
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -Wno-missing-prototypes -c -o $@ $<
$(FUZZ_ODIR)/fuzzlib.o: tests/fuzz/fuzzlib.c | $(FUZZ_ODIR)
	@echo FUZZCC $<
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -Itests/fuzz -MMD -MP -c -o $@ $<
# The objects are named here, not only in the pattern rule, so make does
# not take them for intermediate files and delete them after the link.
$(FUZZ_BINS): $(FUZZ_ODIR)/fuzzlib.o $(FUZZ_LIB_OBJS)
$(FUZZ_ODIR)/fuzz_%: tests/fuzz/fuzz_%.c
	@echo FUZZLD $@
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -Itests/fuzz -MMD -MP -o $@ \
		$(filter %.c %.o,$^) $(FUZZ_LDFLAGS) $(LIBS)

# $(call fuzz_report,LOG): the report in a failed run's log, from its first
# line (a target's own check, a sanitizer or libFuzzer error) on, without
# the frames of libFuzzer and libc or ASan's shadow map; the end of the
# log when there is no such line.
FUZZ_NOISE := fuzzer::|libc\.so|__libc_start|__sanitizer_print_stack
FUZZ_NOISE := $(FUZZ_NOISE)|in _start |in main |pthread_kill|raise\.c|abort\.c
FUZZ_NOISE := $(FUZZ_NOISE)|rudimentary|Combine libFuzzer
FUZZ_NOISE := $(FUZZ_NOISE)|^Shadow|^=>|^  0x|^  [A-Z][a-z ]+: +[0-9a-f]
fuzz_report = { sed -n '/^fuzz_[a-z]*: \|==[0-9]*== *ERROR\|runtime error:/,$$p' \
	$(1) | grep -Ev '$(FUZZ_NOISE)' | head -n 40 | grep . || \
	tail -n 50 $(1); }

# $(call fuzz_run,TARGET,LIBFUZZER OPTIONS): run one target quietly; new
# inputs go to obj/fuzz/corpus/TARGET (the seeds in tests/fuzz/corpus stay
# as they are), crashes to obj/fuzz/artifacts/TARGET/.  On failure, the
# report and its stack are shown (fuzz_report).
define fuzz_run
	@mkdir -p $(FUZZ_ODIR)/corpus/$(1) $(FUZZ_ODIR)/artifacts/$(1) \
		$(FUZZ_ODIR)/tmp
	@echo FUZZ $(1)
	$(Q)if $(FUZZ_ENV) $(FUZZ_ODIR)/fuzz_$(1) $(FUZZ_FLAGS) \
		$(FUZZ_FLAGS_$(1)) $(2) \
		-max_len=$(FUZZ_MAXLEN_$(1)) \
		$(patsubst %,-dict=%,$(wildcard tests/fuzz/$(1).dict)) \
		-artifact_prefix=$(FUZZ_ODIR)/artifacts/$(1)/ \
		$(FUZZ_ODIR)/corpus/$(1) tests/fuzz/corpus/$(1) \
		$(wildcard tests/fuzz/regressions/$(1)) \
		>$(FUZZ_ODIR)/$(1).log 2>&1; then \
		grep -E '^#[0-9]+[[:space:]]+DONE|average_exec_per_sec' \
			$(FUZZ_ODIR)/$(1).log | sed 's/^/  /'; \
	else \
		$(call fuzz_report,$(FUZZ_ODIR)/$(1).log); \
		echo "FAIL fuzz_$(1): see $(FUZZ_ODIR)/$(1).log and" \
			"$(FUZZ_ODIR)/artifacts/$(1)/"; \
		exit 1; \
	fi
endef

# One rule per target and job; the pattern rules below cannot be .PHONY,
# so no file of these names may exist at the top of the tree.
fuzz: $(patsubst %,fuzz-run-%,$(FUZZ_TARGETS))
fuzz-smoke: $(patsubst %,fuzz-replay-%,$(FUZZ_TARGETS)) \
	$(patsubst %,fuzz-smoke-%,$(FUZZ_TARGETS))
fuzz-replay: $(patsubst %,fuzz-replay-%,$(FUZZ_TARGETS))

fuzz-run-%: $(FUZZ_ODIR)/fuzz_%
	$(call fuzz_run,$*,-max_total_time=$(FUZZ_SECONDS))
fuzz-smoke-%: $(FUZZ_ODIR)/fuzz_% fuzz-replay-%
	$(call fuzz_run,$*,-max_total_time=$(FUZZ_SMOKE_SECONDS))

# Run each saved crash once, one process each so that every failing one
# is named (libFuzzer stops at the first); they also seed every run.
fuzz-replay-%: $(FUZZ_ODIR)/fuzz_%
	$(Q)set -- tests/fuzz/regressions/$*/*; [ -e "$$1" ] || exit 0; \
	echo "REPLAY $* ($$# inputs)"; failed=0; mkdir -p $(FUZZ_ODIR)/tmp; \
	for f; do \
		log=$(FUZZ_ODIR)/$*-replay-$${f##*/}.log; \
		if ! $(FUZZ_ENV) $(FUZZ_ODIR)/fuzz_$* "$$f" >"$$log" 2>&1; \
		then \
			$(call fuzz_report,"$$log"); \
			echo "FAIL fuzz_$*: $$f fails again (log: $$log)"; \
			failed=1; \
		fi; \
	done; \
	exit $$failed

-include $(wildcard $(FUZZ_ODIR)/*.d)
