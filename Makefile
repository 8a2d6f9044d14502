# dtlua -- Daytona sandboxes driven from Lua, with a C core.
#
#   make deps      install missing Debian packages (no-op when all present)
#   make           build build/bin/dtlua, build/bin/dtlocal, daytona.core and its parts
#   make test      run every spec with busted
#   make fuzz      fuzz dtlocal's request parsers (FUZZ_SECONDS=300, FUZZ_SEED)
#   make asan      build with AddressSanitizer + UBSan and run the core specs
#   make bench     run the benchmarks (QUICK=1 for a rough table)
#   make docs      the API reference in build/doc/ (LDoc)
#   make install PREFIX=/usr/local   (install-run: programs, modules, Lua
#                  files; install-dev: dtlua.h, libdtlua-core.a, dtlua.pc)
#   make dist      build/dtlua-$(VERSION).tar.gz, the release tarball of HEAD
#   make rock      build/dtlua-$(VERSION)-1.src.rock: that tarball + its rockspec

PREFIX   ?= /usr/local
BUILD    ?= build
CC       ?= cc
LUA_VER  := 5.4
# the release: csrc/dtlua.h says it, the rockspec and the tarball follow
VERSION  := $(shell awk '$$2 == "DTLUA_VERSION" { gsub(/"/, "", $$3); print $$3 }' csrc/dtlua.h)

# Lua's headers and library.  The rock passes LuaRocks' LUA_INCDIR, which
# holds on any system; LuaRocks knows Lua's library only where modules must
# link it (Windows), so dtlua, which links it, asks pkg-config under Lua
# 5.4's usual names unless LUA_LIBDIR (+ LUA_LIBFILE, a name like LuaRocks'
# $(LUALIB)) is given.  A plain `make` asks pkg-config for
# LUA_PC (Debian's name by default).  A static liblua linked into dtlua must
# export its symbols to the C modules dtlua loads, hence -Wl,-E there.
LUA_PC   ?= lua5.4
ifdef LUA_INCDIR
LUA_CFLAGS := -I$(LUA_INCDIR)
ifneq ($(LUA_LIBDIR),)
LUALIB   := -L$(LUA_LIBDIR) -l$(patsubst lib%,%,$(firstword $(subst .so, ,$(patsubst %.a,%,$(or $(LUA_LIBFILE),liblua.so))))) -Wl,-E
else
LUALIB   := $(or $(shell for p in $(LUA_PC) lua-5.4 lua54 lua; do pkg-config --exists $$p 2>/dev/null && { pkg-config --libs $$p; break; }; done),-llua) -Wl,-E
endif
else
LUA_CFLAGS := $(shell pkg-config --cflags $(LUA_PC) 2>/dev/null)
LUALIB   := $(shell pkg-config --libs $(LUA_PC) 2>/dev/null)
endif
PKGS     := libuv libcurl libwebsockets libmicrohttpd openssl
# DEP_INCDIRS / DEP_LIBDIRS: where the rockspec's external_dependencies were
# found (LuaRocks checks them before building)
CPPFLAGS += $(LUA_CFLAGS) $(shell pkg-config --cflags $(PKGS) 2>/dev/null) $(addprefix -I,$(DEP_INCDIRS))
LDFLAGS  += $(addprefix -L,$(DEP_LIBDIRS))
CFLAGS   ?= -O2 -g
# Warnings are errors in the project's own builds; the rock passes WERROR=
# so that a newer compiler's new warning does not break a user's install.
WERROR   ?= -Werror
# always on, whatever CFLAGS the caller gives (LuaRocks' included); SANITIZE
# adds sanitizer flags
DTCFLAGS := -std=gnu11 -Wall -Wextra $(WERROR) -fPIC -fno-strict-aliasing $(SANITIZE)
# how a shared object is linked; LuaRocks passes its own
LIBFLAG  ?= -shared
BUSTED   := lua5.4 /usr/bin/busted
# readline gives the REPL line editing and history (lua.c's LUA_USE_READLINE);
# used when its headers are there, READLINE=0 builds without
READLINE ?= $(shell printf '\043include <stdio.h>\n\043include <readline/readline.h>\n' | $(CC) -E -x c - >/dev/null 2>&1 && echo 1 || echo 0)
ifeq ($(READLINE),1)
RL_CPPFLAGS := -DDTLUA_USE_READLINE
RL_LIBS  := -lreadline
endif
# each shared object and program records only the libraries it calls
ASNEEDED := -Wl,--as-needed

DEB_PKGS := lua5.4 liblua5.4-dev lua-cjson libcurl4-openssl-dev libwebsockets-dev \
            libwebsockets-evlib-uv libuv1-dev libmicrohttpd-dev libwslay-dev libssl-dev \
            lua-busted git pkg-config gcc make curl uidmap luarocks sudo python3 time lua-ldoc \
            libreadline-dev zip \
            lua-discount python3-pylsp python3-matplotlib \
            s3fs rclone sshfs fuse3 openssh-server fuse-overlayfs \
            nftables iptables iproute2 passt openvpn wireguard-go iperf3 iputils-ping openssl \
            skopeo umoci docker-registry mmdebstrap python3-boto3 \
            xvfb xfce4 x11vnc novnc websockify ffmpeg at-spi2-core python3-pyatspi \
            gir1.2-atspi-2.0 dbus-x11 xterm x11-utils xdotool chromium \
            libxtst-dev libx11-dev libxfixes-dev libpng-dev libjpeg62-turbo-dev
# installed without their recommends: wireguard-tools recommends a kernel
# module, which Debian provides only through a whole linux-image package;
# buildah (the peer of dtlocal's builder in bench/build_cache.lua, with
# crun) recommends podman's whole stack
DEB_PKGS_NORECS := wireguard-tools buildah crun
# npm packages installed globally for sandboxes (pinned; see deps)
NPM_GLOBALS := typescript@5.9.3 typescript-language-server@5.3.0 tsx@4.23.15

# The core is a base and four parts (csrc/dt.h): the base (loop, timers,
# signals, util, process) is linked into dtlua and is daytona/core.so for
# plain lua5.4; each part is daytona/core/<part>.so, loaded on first use of
# core.<part>, with its own libraries.  obj.c is compiled into every one;
# digest.c (SHA-256, SHA-1, base64) into the base and the server part.
BASE_OBJ := $(patsubst %,$(BUILD)/obj/%.o,core loop udp util process obj digest)
BASE_LIBS:= $(shell pkg-config --libs libuv 2>/dev/null)
HTTP_OBJ := $(BUILD)/obj/http_client.o $(BUILD)/obj/obj.o
HTTP_LIBS:= $(shell pkg-config --libs libcurl libuv 2>/dev/null)
WS_OBJ   := $(BUILD)/obj/ws_client.o $(BUILD)/obj/obj.o
WS_LIBS  := $(shell pkg-config --libs libwebsockets openssl libuv 2>/dev/null)
SRV_OBJ  := $(patsubst %,$(BUILD)/obj/%.o,server server_request server_ws obj digest)
SRV_LIBS := $(shell pkg-config --libs libmicrohttpd libuv 2>/dev/null) -lwslay
# core.x11, Computer Use's display: XTest input, XFixes cursor, PNG/JPEG
X11_PKGS := x11 xtst xfixes libpng libjpeg
X11_OBJ  := $(patsubst %,$(BUILD)/obj/%.o,x11 x11_keys x11_image obj)
X11_LIBS := $(or $(shell pkg-config --libs $(X11_PKGS) 2>/dev/null),-lX11 -lXtst -lXfixes -lpng -ljpeg) $(BASE_LIBS) -lm
# dtlua-sandbox, the local server's launcher: libc only (csrc/sandbox.h)
LAUNCH_OBJ := $(patsubst %,$(BUILD)/obj/%.o,sandbox_launcher sandbox_root sandbox_init sandbox_net)
HDRS     := $(wildcard csrc/*.h)

CORE_SO  := $(BUILD)/lib/lua/$(LUA_VER)/daytona/core.so
PARTDIR  := $(BUILD)/lib/lua/$(LUA_VER)/daytona/core
PART_SO  := $(PARTDIR)/http.so $(PARTDIR)/ws.so $(PARTDIR)/server.so $(PARTDIR)/x11.so
DTLUA    := $(BUILD)/bin/dtlua
DTLOCAL  := $(BUILD)/bin/dtlocal
LAUNCHER := $(BUILD)/libexec/dtlua/dtlua-sandbox
LUASHARE := $(BUILD)/share/lua/$(LUA_VER)

# what a C host links: the core's base as a static library (csrc/dtlua.h)
CORE_A   := $(BUILD)/lib/libdtlua-core.a

.PHONY: all deps test asan bench install install-run install-dev uninstall clean docs fuzz dist rock

all: $(CORE_SO) $(PART_SO) $(DTLUA) $(DTLOCAL) $(LAUNCHER) $(LUASHARE) $(BUILD)/bin/dtlua-host

deps:
	@missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done; \
	  command -v node >/dev/null || echo nodejs; command -v npm >/dev/null || echo npm); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@missing=$$(for p in $(DEB_PKGS_NORECS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing (no recommends):" $$missing; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@# the official TypeScript SDK, pinned, for the wire-compatibility spec and bench/
	@[ -d spec/ts/node_modules/@daytonaio/sdk ] || npm ci --prefix spec/ts --no-audit --no-fund --loglevel=error
	@# s3rver, pinned: the S3-compatible server of spec/sdk/mount_spec.lua and examples/mount_s3.lua
	@[ -d spec/s3/node_modules/s3rver ] || npm ci --prefix spec/s3 --no-audit --no-fund --loglevel=error
	@# TypeScript for sandboxes on the host's system (dtlocal's default snapshot): tsx runs
	@# code_run's TypeScript, typescript-language-server the /lsp routes; global, so under
	@# /usr/local, which every sandbox sees through its overlay
	@missing=$$(for p in $(NPM_GLOBALS); do npm ls -g --depth=0 "$$p" >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing (npm -g):" $$missing; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO npm install -g --no-audit --no-fund --loglevel=error $$missing; \
	fi

$(BUILD)/obj/%.o: csrc/%.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(DTCFLAGS) -c $< -o $@

# Lua symbols come from the program that loads a module (dtlua, lua5.4,
# a host), so no module links liblua.
$(CORE_SO): $(BASE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(DTCFLAGS) $(LIBFLAG) -o $@ $^ $(ASNEEDED) $(BASE_LIBS) $(LDFLAGS)

$(PARTDIR)/http.so: $(HTTP_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(DTCFLAGS) $(LIBFLAG) -o $@ $^ $(ASNEEDED) $(HTTP_LIBS) $(LDFLAGS)

$(PARTDIR)/ws.so: $(WS_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(DTCFLAGS) $(LIBFLAG) -o $@ $^ $(ASNEEDED) $(WS_LIBS) $(LDFLAGS)

$(PARTDIR)/server.so: $(SRV_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(DTCFLAGS) $(LIBFLAG) -o $@ $^ $(ASNEEDED) $(SRV_LIBS) $(LDFLAGS)

$(BUILD)/obj/x11.o $(BUILD)/obj/x11_keys.o $(BUILD)/obj/x11_image.o: \
  CPPFLAGS += $(shell pkg-config --cflags $(X11_PKGS) 2>/dev/null)
$(PARTDIR)/x11.so: $(X11_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(DTCFLAGS) $(LIBFLAG) -o $@ $^ $(ASNEEDED) $(X11_LIBS) $(LDFLAGS)

# dtlua links the base in and preloads it, so start-up needs no dlopen; the
# parts it loads from <prefix>/lib/lua/5.4 like any C module.
$(BUILD)/obj/dtlua.o: CPPFLAGS += $(RL_CPPFLAGS)
$(DTLUA): $(BUILD)/obj/dtlua.o $(BASE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(DTCFLAGS) -o $@ $^ $(ASNEEDED) $(LUALIB) $(BASE_LIBS) $(RL_LIBS) -lm -ldl $(LDFLAGS)

$(CORE_A): $(BASE_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@
	$(AR) rcs $@ $^

# examples/host: a C program with its own frame loop embedding Lua + the
# core's base (the parts it loads from the build tree).  It builds as an
# installed host would: csrc/dtlua.h and libdtlua-core.a.
$(BUILD)/bin/dtlua-host: examples/host/host.c csrc/dtlua.h $(CORE_A)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -Icsrc $(CFLAGS) $(DTCFLAGS) -o $@ $< $(CORE_A) $(ASNEEDED) $(LUALIB) $(BASE_LIBS) $(LDFLAGS)

# The local server's sandbox launcher and init: a separate small program,
# since it must set up namespaces before anything else runs.
$(LAUNCHER): $(LAUNCH_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(DTCFLAGS) -o $@ $^ $(LDFLAGS)

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
# for C hosts: <prefix>/include/dtlua/dtlua.h, <prefix>/lib/libdtlua-core.a,
# <prefix>/lib/pkgconfig/dtlua.pc
INCLUDEDIR   ?= $(PREFIX)/include
CLIBDIR      ?= $(PREFIX)/lib
PKGCONFIGDIR ?= $(CLIBDIR)/pkgconfig

install: install-run install-dev

# what the rock installs (LuaRocks' lib/ is the C modules' directory, so the
# files for C hosts are left to `make install`)
# Beside the Lua files goes dtlocal's matplotlib hook (a .py), which
# sandboxes load from there.
install-run: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR)/daytona/core $(DESTDIR)$(LUADIR) $(DESTDIR)$(LIBEXECDIR)
	install -m 0755 $(DTLUA) $(DESTDIR)$(BINDIR)/dtlua
	ln -sf dtlua $(DESTDIR)$(BINDIR)/dtlocal
	install -m 0755 $(LAUNCHER) $(DESTDIR)$(LIBEXECDIR)/dtlua-sandbox
	install -m 0755 $(CORE_SO) $(DESTDIR)$(LIBDIR)/daytona/core.so
	install -m 0755 $(PART_SO) $(DESTDIR)$(LIBDIR)/daytona/core/
	cd lua && find . -name '*.lua' -o -name '*.py' | while read f; do \
	  install -D -m 0644 "$$f" "$(DESTDIR)$(LUADIR)/$$f"; done

# dtlua.pc names the directories as installed (without DESTDIR), so that
# `cc host.c $$(pkg-config --cflags --libs dtlua)` builds a host
install-dev: $(CORE_A)
	install -d $(DESTDIR)$(INCLUDEDIR)/dtlua $(DESTDIR)$(CLIBDIR) $(DESTDIR)$(PKGCONFIGDIR)
	install -m 0644 csrc/dtlua.h $(DESTDIR)$(INCLUDEDIR)/dtlua/dtlua.h
	install -m 0644 $(CORE_A) $(DESTDIR)$(CLIBDIR)/libdtlua-core.a
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' \
	    -e 's|@CLIBDIR@|$(CLIBDIR)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' -e 's|@LUADIR@|$(LUADIR)|g' \
	    -e 's|@LIBEXECDIR@|$(LIBEXECDIR)|g' -e 's|@VERSION@|$(VERSION)|g' -e 's|@LUA_PC@|$(LUA_PC)|g' \
	    dtlua.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/dtlua.pc

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/dtlua $(DESTDIR)$(BINDIR)/dtlocal $(DESTDIR)$(LIBEXECDIR)/dtlua-sandbox
	rm -rf $(DESTDIR)$(LIBDIR)/daytona $(DESTDIR)$(LUADIR)/daytona $(DESTDIR)$(LUADIR)/dtlocal
	rm -rf $(DESTDIR)$(INCLUDEDIR)/dtlua
	rm -f $(DESTDIR)$(CLIBDIR)/libdtlua-core.a $(DESTDIR)$(PKGCONFIGDIR)/dtlua.pc

# The release tarball is HEAD (git archive: tracked files only, so nothing
# from build/ or node_modules), reproducible (the commit's time, gzip -n).
# Uncommitted changes are not in it, and it says so.
DIST := $(BUILD)/dtlua-$(VERSION).tar.gz
ROCK := $(BUILD)/dtlua-$(VERSION)-1.src.rock
dist:
	@mkdir -p $(BUILD)
	@git diff --quiet HEAD -- 2>/dev/null || echo "dist: uncommitted changes are not in $(DIST) (it is HEAD)"
	git archive --format=tar --prefix=dtlua-$(VERSION)/ HEAD | gzip -n -9 > $(DIST).tmp
	mv $(DIST).tmp $(DIST)

# A .src.rock is a zip of the rockspec and the source it names.  Built here
# rather than by `luarocks pack`, which would download source.url (the
# published tarball) instead of using the one just made: so it works
# offline and before the release is uploaded.
rock: dist
	@test -f rockspec/dtlua-$(VERSION)-1.rockspec || { echo "rock: no rockspec/dtlua-$(VERSION)-1.rockspec"; exit 1; }
	rm -rf $(BUILD)/rock && mkdir -p $(BUILD)/rock
	cp rockspec/dtlua-$(VERSION)-1.rockspec $(DIST) $(BUILD)/rock/
	rm -f $(ROCK)
	cd $(BUILD)/rock && zip -q -X $(abspath $(ROCK)) dtlua-$(VERSION)-1.rockspec dtlua-$(VERSION).tar.gz
	@echo "rock: $(ROCK)"

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
