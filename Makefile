# Perch — one non-recursive Makefile for every library, program, test and fuzz target.
#
# Layout it discovers (add a file, and it is built; nothing to register here):
#   common/src/*.c          -> $(O)/lib/libperch_common.a   (no project includes)
#   proto/src/*.c           -> $(O)/lib/libperch_proto.a    (includes common only)
#   D/src/*.c, D/bin/N.c    -> $(O)/lib/libperch_D.a, $(O)/bin/N   (D = agent hub cloud)
#   **/*_test.c             -> $(O)/test/NAME, a cmocka unit test (beside the code)
#   tests/tools/N.c         -> $(O)/test/tools/N, helpers for integration tests
#   tests/fuzz/fuzz_N.c     -> $(O)/fuzz/fuzz_N (libFuzzer, clang) and
#                              $(O)/test/replay_N (replays corpus + regressions)
#
# Main targets: all (default), test, asan, lint, fuzz, fuzz-smoke, bench, soak,
# install, clean.  O=DIR puts outputs elsewhere; SAN=1 builds with ASan+UBSan.

O        ?= build
PREFIX   ?= /usr/local
SYSCONFDIR ?= /etc
UNITDIR  ?= $(PREFIX)/lib/systemd/system
DOCDIR   ?= $(PREFIX)/share/doc/perch
DESTDIR  ?=
SAN      ?=
FUZZ_SECONDS ?= 20
FUZZ_CC  ?= clang

CSTD     := -std=c17 -D_GNU_SOURCE
WARN     := -Wall -Wextra -Werror -Wconversion -Wshadow -Wvla -Wstrict-prototypes \
            -Wmissing-prototypes -Wold-style-definition -Wformat=2 -Wundef \
            -Wcast-align -Wimplicit-fallthrough -Wpointer-arith -Wwrite-strings \
            -Wmissing-declarations -Wredundant-decls
INCS     := -Icommon/include -Iproto/include
PKGS     := libwebsockets jansson yaml-0.1 sqlite3
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lmbedtls -lmbedx509 -lmbedcrypto -lm
CMOCKA_LIBS := $(shell pkg-config --libs cmocka 2>/dev/null || echo -lcmocka)

ifeq ($(SAN),1)
  OPT    := -O1 -g -fsanitize=address,undefined,float-cast-overflow -fno-omit-frame-pointer -fno-sanitize-recover=all
  LDOPT  := -fsanitize=address,undefined,float-cast-overflow
else
  OPT    := -O2 -g -fstack-protector-strong -D_FORTIFY_SOURCE=2 -fPIE
  LDOPT  := -pie -Wl,-z,relro,-z,now -Wl,--as-needed
endif

CFLAGS   ?=
LDFLAGS  ?=
ALL_CFLAGS := $(CSTD) $(WARN) $(OPT) $(INCS) $(PKG_CFLAGS) -MMD -MP $(CFLAGS)
ALL_LDFLAGS := $(LDOPT) $(LDFLAGS)

# --- sources --------------------------------------------------------------
notest    = $(filter-out %_test.c,$(1))
COMMON_SRC := $(call notest,$(wildcard common/src/*.c))
PROTO_SRC  := $(call notest,$(wildcard proto/src/*.c))
DAEMONS    := agent hub cloud
UNIT_SRC   := $(wildcard common/src/*_test.c proto/src/*_test.c tests/unit/*_test.c \
                $(foreach d,$(DAEMONS),$(d)/src/*_test.c))
TOOL_SRC   := $(wildcard tests/tools/*.c)
FUZZ_SRC   := $(wildcard tests/fuzz/fuzz_*.c)
BIN_SRC    := $(foreach d,$(DAEMONS),$(wildcard $(d)/bin/*.c))

obj = $(patsubst %.c,$(O)/obj/%.o,$(1))

LIB_COMMON := $(O)/lib/libperch_common.a
LIB_PROTO  := $(O)/lib/libperch_proto.a
daemon_lib = $(O)/lib/libperch_$(1).a
daemon_src = $(call notest,$(wildcard $(1)/src/*.c))

BINS       := $(foreach f,$(BIN_SRC),$(O)/bin/$(basename $(notdir $(f))))
UNIT_BINS  := $(foreach f,$(UNIT_SRC),$(O)/test/$(basename $(notdir $(f))))
TOOL_BINS  := $(foreach f,$(TOOL_SRC),$(O)/test/tools/$(basename $(notdir $(f))))
FUZZ_NAMES := $(patsubst tests/fuzz/fuzz_%.c,%,$(FUZZ_SRC))
FUZZ_BINS  := $(foreach n,$(FUZZ_NAMES),$(O)/fuzz/fuzz_$(n))
REPLAY_BINS := $(foreach n,$(FUZZ_NAMES),$(O)/test/replay_$(n))

.PHONY: all test unit asan lint format fuzz fuzz-smoke bench soak install clean deps images
.DEFAULT_GOAL := all

all: $(BINS) $(LIB_COMMON) $(LIB_PROTO) $(foreach d,$(DAEMONS),$(if $(call daemon_src,$(d)),$(call daemon_lib,$(d))))

# --- compile and archive --------------------------------------------------
$(O)/obj/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(LIB_COMMON): $(call obj,$(COMMON_SRC))
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^

$(LIB_PROTO): $(call obj,$(PROTO_SRC))
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^

define DAEMON_LIB_RULE
$(call daemon_lib,$(1)): $(call obj,$(call daemon_src,$(1)))
	@mkdir -p $$(@D)
	rm -f $$@ && ar rcs $$@ $$^ $(if $(call daemon_src,$(1)),,/dev/null)
endef
$(foreach d,$(DAEMONS),$(if $(call daemon_src,$(d)),$(eval $(call DAEMON_LIB_RULE,$(d)))))

# Libraries to link, most dependent first.
libs_for = $(if $(call daemon_src,$(1)),$(call daemon_lib,$(1))) $(LIB_PROTO) $(LIB_COMMON)

define BIN_RULE
$(O)/bin/$(basename $(notdir $(1))): $(call obj,$(1)) $(call libs_for,$(firstword $(subst /, ,$(1))))
	@mkdir -p $$(@D)
	$$(CC) $$(ALL_LDFLAGS) -o $$@ $$^ $$(PKG_LIBS)
endef
$(foreach f,$(BIN_SRC),$(eval $(call BIN_RULE,$(f))))

ALL_LIBS = $(foreach d,$(DAEMONS),$(if $(call daemon_src,$(d)),$(call daemon_lib,$(d)))) $(LIB_PROTO) $(LIB_COMMON)

define UNIT_RULE
$(O)/test/$(basename $(notdir $(1))): $(call obj,$(1)) $(ALL_LIBS)
	@mkdir -p $$(@D)
	$$(CC) $$(ALL_LDFLAGS) -o $$@ $$^ $$(CMOCKA_LIBS) $$(PKG_LIBS)
endef
$(foreach f,$(UNIT_SRC),$(eval $(call UNIT_RULE,$(f))))

define TOOL_RULE
$(O)/test/tools/$(basename $(notdir $(1))): $(call obj,$(1)) $(ALL_LIBS)
	@mkdir -p $$(@D)
	$$(CC) $$(ALL_LDFLAGS) -o $$@ $$^ $$(PKG_LIBS)
endef
$(foreach f,$(TOOL_SRC),$(eval $(call TOOL_RULE,$(f))))

# Replay drivers: the fuzz target's entry point fed with every file of its seed
# corpus and of its regression folder, in the ordinary (or sanitizer) build.
define REPLAY_RULE
$(O)/test/replay_$(1): $(call obj,tests/fuzz/fuzz_$(1).c tests/fuzz/replay_main.c) $(ALL_LIBS)
	@mkdir -p $$(@D)
	$$(CC) $$(ALL_LDFLAGS) -o $$@ $$^ $$(PKG_LIBS)
endef
$(foreach n,$(FUZZ_NAMES),$(eval $(call REPLAY_RULE,$(n))))

# libFuzzer builds: clang, every library source compiled again with coverage.
FUZZ_CFLAGS := $(CSTD) -g -O1 -fsanitize=fuzzer-no-link,address,undefined \
               -fno-sanitize-recover=all $(INCS) $(PKG_CFLAGS) -DPERCH_FUZZING=1
# The hub's pure parts that read what clients send: twins, identities.
FUZZ_LIB_SRC = $(COMMON_SRC) $(PROTO_SRC) $(call daemon_src,agent) hub/src/twin.c hub/src/identity.c
fobj = $(patsubst %.c,$(O)/fuzzobj/%.o,$(1))
$(O)/fuzzobj/%.o: %.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c $< -o $@
define FUZZ_RULE
$(O)/fuzz/fuzz_$(1): $(call fobj,tests/fuzz/fuzz_$(1).c $(FUZZ_LIB_SRC))
	@mkdir -p $$(@D)
	$$(FUZZ_CC) -fsanitize=fuzzer,address,undefined -o $$@ $$^ $$(PKG_LIBS)
endef
$(foreach n,$(FUZZ_NAMES),$(eval $(call FUZZ_RULE,$(n))))

# --- tests ----------------------------------------------------------------
test: all $(UNIT_BINS) $(TOOL_BINS) $(REPLAY_BINS)
	@O=$(O) tests/run.sh

unit: all $(UNIT_BINS) $(REPLAY_BINS)
	@O=$(O) PERCH_TEST_ONLY=unit tests/run.sh

# ASan keeps freed memory in a quarantine (256 MB by default), which would make
# the hub suite's "memory stays flat" checks measure ASan, not the hub.
asan:
	ASAN_OPTIONS=$${ASAN_OPTIONS:-quarantine_size_mb=8:detect_leaks=1} \
	  $(MAKE) O=$(O)/asan SAN=1 test

fuzz: $(FUZZ_BINS)

fuzz-smoke: $(FUZZ_BINS)
	@O=$(O) FUZZ_SECONDS=$(FUZZ_SECONDS) tests/fuzz/smoke.sh $(FUZZ_NAMES)

bench: all $(TOOL_BINS)
	@O=$(O) tests/bench/run.sh

soak: all $(TOOL_BINS)
	@O=$(O) PERCH_SOAK=1 tests/bench/run.sh

# Sample module images (FROM scratch, static): built and pushed to the local
# registry by deploy/images.sh with the project's libraries.
images: $(LIB_COMMON) $(LIB_PROTO)
	O=$(O) deploy/images.sh

# --- lint -----------------------------------------------------------------
C_FILES := $(shell git ls-files '*.c' '*.h' 2>/dev/null)
lint:
	@echo "clang-format (check)"; clang-format --dry-run -Werror $(C_FILES)
	@echo "cppcheck"; cppcheck --quiet --error-exitcode=1 --inline-suppr \
	  --enable=warning,performance,portability --std=c11 \
	  --suppress=missingIncludeSystem $(INCS) -D__GNUC__ $(filter %.c,$(C_FILES))
	@mkdir -p $(O); echo "clang-tidy"; clang-tidy --quiet $(filter %.c,$(C_FILES)) -- $(CSTD) $(INCS) $(PKG_CFLAGS) 2>/dev/null \
	  | tee $(O)/clang-tidy.log; ! grep -q -E '(warning|error):' $(O)/clang-tidy.log
	@echo "lint: clean"

format:
	clang-format -i $(C_FILES)

# --- install ----------------------------------------------------------------
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/perch \
	  $(DESTDIR)$(DOCDIR)
	$(if $(BINS),install -m 0755 $(BINS) $(DESTDIR)$(PREFIX)/bin/)
	install -m 0644 README.md LICENSE docs/*.md $(DESTDIR)$(DOCDIR)/
	@for u in deploy/systemd/*.service; do [ -e "$$u" ] || continue; \
	  n=$$(basename $$u .service); \
	  if [ -x $(O)/bin/$$n ]; then \
	    sed 's|@BINDIR@|$(PREFIX)/bin|g; s|@SYSCONFDIR@|$(SYSCONFDIR)|g; s|@DOCDIR@|$(DOCDIR)|g' $$u > $(DESTDIR)$(UNITDIR)/$$n.service; \
	    echo "installed unit $$n.service"; fi; done
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/perch/config.yaml ]; then \
	  echo "kept existing $(DESTDIR)$(SYSCONFDIR)/perch/config.yaml"; \
	else install -m 0640 deploy/config.yaml $(DESTDIR)$(SYSCONFDIR)/perch/config.yaml; fi

clean:
	rm -rf $(O)

-include $(shell find $(O)/obj $(O)/fuzzobj -name '*.d' 2>/dev/null)
