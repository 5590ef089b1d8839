# tandem - continuous-checkpoint replication for Xen VMs.
#
#   make            build ./tandem
#   make deps       install the Debian packages it needs (apt-get)
#   make test       unit + integration tests (installs deps first)
#   make demo       protect a synthetic memdom guest on loopback, fail over
#   make bench      benchmarks, one `bench NAME: ...` line each
#   make fuzz       run every libFuzzer harness for FUZZ_TIME seconds
#   make lab        the emulated two-host Xen lab and its xl remus baseline
#   make lab-failover  tandem protects the lab's PVH guest; host A is killed five times,
#                      then the side by side with xl remus (LAB_COMPARE=0: failover only)
#   make lab-promote   issue 24's proof: only the replication link cut, `tandem promote` refused,
#                      --force activates B, A's guest paused and superseded, the client carries on
#   make lab-reprotect issue 19's sequence: A killed, B runs the guest, A returns and B
#                      re-protects to it, `tandem switchover` back to A; one TCP connection
#   make lab-disk      issue 18 (T3): the guest's ext4 disk on DRBD, host A killed five times;
#                      e2fsck clean on B and the client's last number on disk (lab.sh disk-failover)
#   make lab-compare   pause and throughput side by side with xl remus (100 and 25 ms)
#   SANITIZER=address|undefined   build with a sanitizer

CC ?= cc
ifeq ($(CC),cc)
CC := gcc
endif
FUZZCC ?= clang
PKGS := libuv libcrypto libnl-3.0 libnl-route-3.0 xencontrol xenguest xenstore xentoollog xenlight libsystemd \
	libnetfilter_queue libmnl
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS))
PKG_LIBS = $(shell pkg-config --libs $(PKGS))

WARN := -Wall -Wextra -Werror -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 \
	-Wshadow -Wno-format-nonliteral -Wvla
CFLAGS ?= -O2 -g
CFLAGS += -std=gnu11 -D_GNU_SOURCE -pthread $(WARN) -MD -MP
LDLIBS += -pthread -lm -llz4

ifeq ($(SANITIZER),address)
CFLAGS += -fsanitize=address -fno-omit-frame-pointer
LDFLAGS += -fsanitize=address
else ifeq ($(SANITIZER),undefined)
CFLAGS += -fsanitize=undefined -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=undefined
endif

MODULES := lib config domain device disk primary backup buffering heartbeat cli
LIB_SRCS := $(filter-out cli/main.c,$(foreach m,$(MODULES),$(wildcard $(m)/*.c)))
LIB_OBJS := $(LIB_SRCS:.c=.o)
TEST_SRCS := $(wildcard tests/*.c)
TEST_OBJS := $(TEST_SRCS:.c=.o)
BENCH_SRCS := $(wildcard bench/*.c)
FUZZ_HARNESSES := $(basename $(notdir $(wildcard fuzz/fuzz-*.c)))
FUZZ_BINS := $(addprefix fuzz/bin/,$(FUZZ_HARNESSES))
FUZZ_LIB_SRCS := domain/qmp.c lib/wire.c lib/util.c lib/log.c lib/channel.c lib/key.c lib/fault.c config/config.c \
	heartbeat/heartbeat.c heartbeat/policy.c lib/status.c
FUZZ_TIME ?= 60

.PHONY: all deps test test-build demo bench fuzz fuzz-corpus soak lab lab-failover lab-promote lab-reprotect lab-oracle lab-compare lab-disk lab-shell clean units install uninstall

all: tandem

tandem: cli/main.o $(LIB_OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)

tests/tandem-test: $(TEST_OBJS) $(LIB_OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)

bench/tandem-bench: $(BENCH_SRCS:.c=.o) $(LIB_OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)

%.o: %.c
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -c -o $@ $<

fuzz/bin/%: fuzz/%.c $(FUZZ_LIB_SRCS)
	@mkdir -p fuzz/bin
	$(FUZZCC) -g -O1 -std=gnu11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined \
		$(PKG_CFLAGS) -o $@ $^ -lcrypto -llz4 -luv -pthread

deps:
	@bash scripts/deps.sh

test-build: tandem tests/tandem-test $(FUZZ_BINS)

# The README's test command.  Runs `deps` first, then builds in a sub-make so
# pkg-config sees freshly installed packages.
test: deps
	@$(MAKE) --no-print-directory test-build
	@./tests/tandem-test $(TESTS)

soak: deps
	@$(MAKE) --no-print-directory test-build
	@TANDEM_TRIALS=1000 TANDEM_FAULTS=2000 TANDEM_DISK_FAULTS=60 TANDEM_TIMEOUT_S=21600 \
		./tests/tandem-test $(or $(TESTS),engine_random_kill fault_schedule disk_schedule_vm61)

demo: deps
	@$(MAKE) --no-print-directory tandem
	@bash scripts/demo.sh

bench: deps
	@$(MAKE) --no-print-directory tandem bench/tandem-bench
	@./bench/tandem-bench $(BENCH)
	@if [ -z "$(BENCH)" ] || echo "$(BENCH)" | grep -qw link; then bash bench/link.sh; fi
	@if [ -z "$(BENCH)" ] || echo "$(BENCH)" | grep -qw disk; then bash bench/disk.sh; fi

fuzz: deps
	@$(MAKE) --no-print-directory $(FUZZ_BINS)
	@bash scripts/fuzz.sh $(FUZZ_TIME)

lab:
	@bash lab/lab.sh baseline

lab-failover: deps
	@$(MAKE) --no-print-directory all
	@TANDEM_BIN=$(CURDIR)/tandem bash lab/lab.sh proof

lab-promote: deps
	@$(MAKE) --no-print-directory all
	@TANDEM_BIN=$(CURDIR)/tandem bash lab/lab.sh promote

lab-reprotect: deps
	@$(MAKE) --no-print-directory all
	@TANDEM_BIN=$(CURDIR)/tandem bash lab/lab.sh reprotect

lab-oracle: deps
	@$(MAKE) --no-print-directory all
	@TANDEM_BIN=$(CURDIR)/tandem bash lab/lab.sh oracle

lab-disk: deps
	@$(MAKE) --no-print-directory all
	@TANDEM_BIN=$(CURDIR)/tandem bash lab/lab.sh disk-failover

lab-compare: deps
	@$(MAKE) --no-print-directory all
	@TANDEM_BIN=$(CURDIR)/tandem bash lab/lab.sh compare

# Boots the lab unless it is up already, then a shell in A's dom0 (HOST=B for B).
lab-shell:
	@bash lab/lab.sh ssh A true >/dev/null 2>&1 || bash lab/lab.sh up
	@bash lab/lab.sh shell $(or $(HOST),A)

# ---- install (Debian's places with PREFIX=/usr; DESTDIR for packaging) ----
PREFIX ?= /usr/local
SBINDIR ?= $(PREFIX)/sbin
SYSCONFDIR ?= /etc
DOCDIR ?= $(PREFIX)/share/doc/tandem
UNITDIR ?= $(PREFIX)/lib/systemd/system
MANDIR ?= $(PREFIX)/share/man
COMPLETIONDIR ?= $(PREFIX)/share/bash-completion/completions
# Pacemaker looks for OCF agents under OCF_ROOT/resource.d (Debian's
# resource-agents: /usr/lib/ocf); the agent is ocf:tandem:vm.
OCFDIR ?= $(PREFIX)/lib/ocf/resource.d/tandem
UNITS := tandem-primary@.service tandem-backup@.service

# The systemd units for these directories, into UNITS_OUT (default: systemd/).
UNITS_OUT ?= systemd
units:
	@for u in $(UNITS); do \
		sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' \
		    -e 's|@DOCDIR@|$(DOCDIR)|g' systemd/$$u.in > $(UNITS_OUT)/$$u || exit 1; \
	done

install: all
	install -D -m 0755 tandem $(DESTDIR)$(SBINDIR)/tandem
	install -d -m 0755 $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DOCDIR)
	@$(MAKE) --no-print-directory units UNITS_OUT=$(DESTDIR)$(UNITDIR)
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/tandem
	install -m 0644 examples/xen-pvh.cfg $(DESTDIR)$(DOCDIR)/example-xen-pvh.cfg
	install -m 0644 README.md docs/*.md $(DESTDIR)$(DOCDIR)/
	install -D -m 0644 man/tandem.8 $(DESTDIR)$(MANDIR)/man8/tandem.8
	install -D -m 0644 man/tandem.cfg.5 $(DESTDIR)$(MANDIR)/man5/tandem.cfg.5
	install -D -m 0644 completion/tandem $(DESTDIR)$(COMPLETIONDIR)/tandem
	install -d -m 0755 $(DESTDIR)$(OCFDIR)
	sed -e 's|^OCF_RESKEY_tandem_default=.*|OCF_RESKEY_tandem_default=$(SBINDIR)/tandem|' \
		ocf/vm > $(DESTDIR)$(OCFDIR)/vm
	chmod 0755 $(DESTDIR)$(OCFDIR)/vm
	@echo "installed; next: tandem keygen $(SYSCONFDIR)/tandem/tandem.key, a $(SYSCONFDIR)/tandem/NAME.cfg per VM (example in $(DOCDIR)), systemctl daemon-reload, systemctl enable --now tandem-primary@NAME (docs/operations.md)"

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/tandem
	for u in $(UNITS); do rm -f $(DESTDIR)$(UNITDIR)/$$u; done
	rm -rf $(DESTDIR)$(DOCDIR)
	rm -f $(DESTDIR)$(MANDIR)/man8/tandem.8 $(DESTDIR)$(MANDIR)/man5/tandem.cfg.5
	rm -f $(DESTDIR)$(COMPLETIONDIR)/tandem
	rm -f $(DESTDIR)$(OCFDIR)/vm
	-rmdir $(DESTDIR)$(OCFDIR) 2>/dev/null
	@echo "left $(SYSCONFDIR)/tandem (keys and VM configurations) in place"

clean:
	rm -f tandem tests/tandem-test bench/tandem-bench
	rm -rf fuzz/bin
	find . -name '*.o' -delete -o -name '*.d' -delete

-include $(shell find . -name '*.d' -not -path './.git/*' 2>/dev/null)
