# dtlua -- Daytona sandboxes driven from Lua, with a C core.
#
#   make deps      install missing Debian packages (no-op when all present)
#   make           build build/bin/dtlua, build/bin/dtlocal, daytona.core and its parts
#   make test      run every spec with busted
#   make fuzz      fuzz dtlocal's request parsers (FUZZ_SECONDS=300, FUZZ_SEED)
#   make asan      build with AddressSanitizer + UBSan and run the core specs
#   make bench     run the benchmarks (QUICK=1 for a rough table)
#   make docs      the API reference in build/doc/ (LDoc)
#   make install PREFIX=/usr/local

PREFIX   ?= /usr/local
BUILD    ?= build
CC       ?= cc
LUA_VER  := 5.4

PKGS     := lua5.4 libuv libcurl libwebsockets libmicrohttpd openssl
CPPFLAGS += $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
CFLAGS   ?= -O2 -g
# always on, whatever CFLAGS the caller gives; SANITIZE adds sanitizer flags
DTCFLAGS := -std=gnu11 -Wall -Wextra -Werror -fPIC -fno-strict-aliasing $(SANITIZE)
BUSTED   := lua5.4 /usr/bin/busted
LUALIB   := $(shell pkg-config --libs lua5.4 2>/dev/null)
# each shared object and program records only the libraries it calls
ASNEEDED := -Wl,--as-needed

DEB_PKGS := lua5.4 liblua5.4-dev lua-cjson libcurl4-openssl-dev libwebsockets-dev \
            libwebsockets-evlib-uv libuv1-dev libmicrohttpd-dev libwslay-dev libssl-dev \
            lua-busted git pkg-config gcc make curl uidmap luarocks sudo python3 time lua-ldoc \
            lua-discount

# The core is a base and three parts (csrc/dt.h): the base (loop, timers,
# signals, util, process) is linked into dtlua and is daytona/core.so for
# plain lua5.4; each part is daytona/core/<part>.so, loaded on first use of
# core.<part>, with its own libraries.  obj.c is compiled into every one;
# digest.c (SHA-256, SHA-1, base64) into the base and the server part.
BASE_OBJ := $(patsubst %,$(BUILD)/obj/%.o,core loop util process obj digest)
BASE_LIBS:= $(shell pkg-config --libs libuv 2>/dev/null)
HTTP_OBJ := $(BUILD)/obj/http_client.o $(BUILD)/obj/obj.o
HTTP_LIBS:= $(shell pkg-config --libs libcurl libuv 2>/dev/null)
WS_OBJ   := $(BUILD)/obj/ws_client.o $(BUILD)/obj/obj.o
WS_LIBS  := $(shell pkg-config --libs libwebsockets openssl libuv 2>/dev/null)
SRV_OBJ  := $(patsubst %,$(BUILD)/obj/%.o,server server_request server_ws obj digest)
SRV_LIBS := $(shell pkg-config --libs libmicrohttpd libuv 2>/dev/null) -lwslay
HDRS     := $(wildcard csrc/*.h)

CORE_SO  := $(BUILD)/lib/lua/$(LUA_VER)/daytona/core.so
PARTDIR  := $(BUILD)/lib/lua/$(LUA_VER)/daytona/core
PART_SO  := $(PARTDIR)/http.so $(PARTDIR)/ws.so $(PARTDIR)/server.so
DTLUA    := $(BUILD)/bin/dtlua
DTLOCAL  := $(BUILD)/bin/dtlocal
LAUNCHER := $(BUILD)/libexec/dtlua/dtlua-sandbox
LUASHARE := $(BUILD)/share/lua/$(LUA_VER)

.PHONY: all deps test asan bench install uninstall clean docs fuzz

all: $(CORE_SO) $(PART_SO) $(DTLUA) $(DTLOCAL) $(LAUNCHER) $(LUASHARE) $(BUILD)/bin/dtlua-host

deps:
	@missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done; \
	  command -v node >/dev/null || echo nodejs; command -v npm >/dev/null || echo npm); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@# the official TypeScript SDK, pinned, for the wire-compatibility spec and bench/
	@[ -d spec/ts/node_modules/@daytonaio/sdk ] || npm ci --prefix spec/ts --no-audit --no-fund --loglevel=error

$(BUILD)/obj/%.o: csrc/%.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(DTCFLAGS) -c $< -o $@

# Lua symbols come from the program that loads a module (dtlua, lua5.4,
# a host), so no module links liblua.
$(CORE_SO): $(BASE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(DTCFLAGS) -shared -o $@ $^ $(ASNEEDED) $(BASE_LIBS) $(LDFLAGS)

$(PARTDIR)/http.so: $(HTTP_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(DTCFLAGS) -shared -o $@ $^ $(ASNEEDED) $(HTTP_LIBS) $(LDFLAGS)

$(PARTDIR)/ws.so: $(WS_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(DTCFLAGS) -shared -o $@ $^ $(ASNEEDED) $(WS_LIBS) $(LDFLAGS)

$(PARTDIR)/server.so: $(SRV_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(DTCFLAGS) -shared -o $@ $^ $(ASNEEDED) $(SRV_LIBS) $(LDFLAGS)

# dtlua links the base in and preloads it, so start-up needs no dlopen; the
# parts it loads from <prefix>/lib/lua/5.4 like any C module.
$(DTLUA): $(BUILD)/obj/dtlua.o $(BASE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(DTCFLAGS) -o $@ $^ $(ASNEEDED) $(LUALIB) $(BASE_LIBS) -lm -ldl $(LDFLAGS)

# examples/host: a C program with its own frame loop embedding Lua + the
# core's base (the parts it loads from the build tree)
$(BUILD)/bin/dtlua-host: examples/host/host.c $(BASE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(DTCFLAGS) -o $@ $^ $(ASNEEDED) $(LUALIB) $(BASE_LIBS) -lm -ldl $(LDFLAGS)

# The local server's sandbox launcher and init: a separate small program,
# since it must set up namespaces before anything else runs.
$(LAUNCHER): csrc/sandbox_launcher.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(DTCFLAGS) -o $@ $< $(LDFLAGS)

# dtlocal is dtlua under another name: it runs the local server's main.
$(DTLOCAL): $(DTLUA)
	ln -sf dtlua $@

$(LUASHARE):
	@mkdir -p $(dir $@)
	ln -sfn $(CURDIR)/lua $@

test: all
	$(BUSTED)

# The request parsers of dtlocal fuzzed against a real server and sandbox
# (spec/dtlocal/fuzz_spec.lua; make test runs it for a few seconds):
# FUZZ_SECONDS (default 300) of seed FUZZ_SEED (default: a random one,
# printed); FUZZ_SEED=s FUZZ_INPUT=i replays one input of a failure.
fuzz: all
	FUZZ_SECONDS=$${FUZZ_SECONDS:-300} $(BUSTED) spec/dtlocal/fuzz_spec.lua

# The C core's specs under AddressSanitizer + UBSan.  Lua itself is not
# instrumented; the sanitizer runtime is preloaded into lua5.4.
ASAN_BUILD := build-asan
asan:
	$(MAKE) BUILD=$(ASAN_BUILD) CFLAGS="-O1 -g" SANITIZE="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" all
	DTLUA_BUILD=$(ASAN_BUILD) \
	LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	$(BUSTED) --run=core

# The API reference, generated from the LDoc comments (spec/docs_spec.lua
# checks that every public function has one).
docs:
	ldoc -q .

bench: all
	DTLUA_BUILD=$(BUILD) bench/run $(if $(QUICK),--quick)

# The layout dtlua looks for beside its own binary: <prefix>/bin,
# <prefix>/lib/lua/5.4, <prefix>/share/lua/5.4, <prefix>/libexec/dtlua.
BINDIR     ?= $(PREFIX)/bin
LIBDIR     ?= $(PREFIX)/lib/lua/$(LUA_VER)
LUADIR     ?= $(PREFIX)/share/lua/$(LUA_VER)
LIBEXECDIR ?= $(PREFIX)/libexec/dtlua

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR)/daytona/core $(DESTDIR)$(LUADIR) $(DESTDIR)$(LIBEXECDIR)
	install -m 0755 $(DTLUA) $(DESTDIR)$(BINDIR)/dtlua
	ln -sf dtlua $(DESTDIR)$(BINDIR)/dtlocal
	install -m 0755 $(LAUNCHER) $(DESTDIR)$(LIBEXECDIR)/dtlua-sandbox
	install -m 0755 $(CORE_SO) $(DESTDIR)$(LIBDIR)/daytona/core.so
	install -m 0755 $(PART_SO) $(DESTDIR)$(LIBDIR)/daytona/core/
	cd lua && find . -name '*.lua' | while read f; do \
	  install -D -m 0644 "$$f" "$(DESTDIR)$(LUADIR)/$$f"; done

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/dtlua $(DESTDIR)$(BINDIR)/dtlocal $(DESTDIR)$(LIBEXECDIR)/dtlua-sandbox
	rm -rf $(DESTDIR)$(LIBDIR)/daytona $(DESTDIR)$(LUADIR)/daytona $(DESTDIR)$(LUADIR)/dtlocal

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
