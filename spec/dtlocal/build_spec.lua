-- The builder (lua/dtlocal/images/build.lua) on the image store, against a
-- real registry on loopback holding the busybox test image
-- (spec/support/registry.lua): RUN steps in sandboxes whose layers become
-- the image's, COPY from uploaded context tars (links in the context copied
-- as links, never followed on the host; destinations resolved inside the
-- image, through its own links), ENV/WORKDIR/USER/CMD as configuration, the
-- cache by content (the same definition is built once, a changed step
-- rebuilds from there), and the failures: a failing RUN (its step, exit
-- code and output tail, nothing of it left), COPY sources outside the
-- context or through a link, a context tar that tries to leave its
-- directory, unsupported instructions.
local core = require "daytona.core"
local process = require "daytona.runtime.process"
local helper = require "support.helper"
local registry = require "support.registry"
local Store = require "dtlocal.images.store"
local build = require "dtlocal.images.build"

local util = core.util

local reg, ref

local function sh(script, ...)
  local r = assert(process.run({ "sh", "-c", script, "sh", ... }, { timeout = 60, stderr = "stdout" }))
  assert.are.equal(0, r.exit_code, r.stdout)
  return r.stdout
end

-- a context tar as the SDKs make one: `dir` holds the files under `archive`
local function context_tar(files, archive)
  local dir = helper.tmpdir()
  for name, text in pairs(files) do
    local path = dir .. "/" .. archive .. "/" .. name
    sh('mkdir -p "$(dirname "$1")"', path)
    if type(text) == "table" then
      assert(util.symlink(text.link, path))
    else
      local f = assert(io.open(path, "wb"))
      f:write(text)
      f:close()
    end
  end
  local tar = dir .. "/context.tar"
  sh('tar -c -f "$1" --format=pax --numeric-owner --owner=0 --group=0 -C "$2" "$3"', tar, dir, archive)
  return tar
end

-- the file at path in the image's merged layers (top first), or nil
local function image_file(img, path)
  for i = #img.layers, 1, -1 do
    local p = img.layers[i] .. path
    local st = util.stat(p, false)
    if st then
      if st.type == "link" then return { link = util.readlink(p) } end
      if st.type ~= "file" then return { type = st.type, uid = st.uid, mode = st.mode } end
      return { text = helper.read_file(p), uid = st.uid, gid = st.gid, mode = st.mode }
    end
  end
end

local function new_store() return Store.open(helper.tmpdir() .. "/images") end

local function builds(store, dockerfile, opts)
  opts = opts or {}
  local lines = {}
  local img, msg, code = build.build(store, {
    dockerfile = dockerfile, contexts = opts.contexts, context_hashes = opts.hashes,
    on_log = function(l) lines[#lines + 1] = l end, ref = opts.ref,
    launcher = helper.build_path("libexec/dtlua/dtlua-sandbox"),
  })
  return img, msg, code, table.concat(lines, "\n")
end

describe("dtlocal builder", function()
  setup(function()
    helper.run(function()
      reg = registry.start()
      ref = reg:push_test_image("dtlua/test:1")
    end)
  end)
  teardown(function()
    if reg then helper.run(function() reg:stop() end) end
    helper.cleanup()
  end)

  it("parses Dockerfiles: continuations, comments, variables", function()
    local steps = build.parse("# c\nFROM x\n\nRUN a \\\n  b\n# in\nENV A=1\n")
    assert.are.same({ { op = "FROM", args = "x", line = 2 }, { op = "RUN", args = "a    b", line = 4 },
                      { op = "ENV", args = "A=1", line = 7 } }, steps)
    assert.are.equal("x-1-d-/p", build.expand("x-$A-${B:-d}-${A:+/p}", { A = "1" }))
    assert.are.equal("$A", build.expand("\\$A", { A = "1" }))
    local ok, err = pcall(build.parse, "FROM x\nRUN <<EOF\nx\nEOF\n")
    assert.is_false(ok)
    assert.matches("heredocs", err.build)
  end)

  it("builds ENV, WORKDIR, COPY and CMD into an image, COPY resolved inside the image", function()
    helper.run(function()
      local store = new_store()
      local tar = context_tar({ ["app.txt"] = "hello\n", ["dir/a"] = "A", ["dir/sub/b"] = "B",
                                ["dir/escape"] = { link = "/etc/shadow" } }, "home/u/proj")
      local img, msg, _, log = builds(store, table.concat({
        "FROM " .. ref,
        "ENV GREETING='hi there' OTHER=x",
        "WORKDIR /srv/app",
        "COPY home/u/proj/app.txt /srv/app/",
        "COPY home/u/proj/dir data",
        "COPY --chown=1000:1000 home/u/proj/app.txt /opt/opq/copied.txt",
        'COPY --chown=1000 --chmod=600 ["home/u/proj/app.txt", "/srv/json form.txt"]',
        'CMD ["sleep", "infinity"]',
      }, "\n"), { contexts = { tar }, hashes = { "h1" } })
      assert.is_table(img, msg)
      assert.matches("Step 1/8 : FROM", log, 1, true)
      assert.matches("Step 5/8 : COPY home/u/proj/dir data", log, 1, true)
      assert.are.equal("/srv/app", img.config.cwd)
      assert.are.same({ "sleep", "infinity" }, img.config.cmd)
      local env = table.concat(img.config.env, "\n")
      assert.matches("GREETING=hi there", env, 1, true)
      assert.are.equal("hello\n", image_file(img, "/srv/app/app.txt").text)
      assert.are.equal(0, image_file(img, "/srv/app/app.txt").uid)
      assert.are.equal("B", image_file(img, "/srv/app/data/sub/b").text)
      -- a link of the context is copied as a link, never followed here
      assert.are.same({ link = "/etc/shadow" }, image_file(img, "/srv/app/data/escape"))
      assert.are.equal(1000, image_file(img, "/opt/opq/copied.txt").uid)
      local jf = image_file(img, "/srv/json form.txt")
      assert.are.equal("hello\n", jf.text)
      assert.are.equal(1000, jf.uid)
      assert.are.equal(384, jf.mode)
      -- the base's layers are shared, not copied
      local base = store:image(ref)
      for i, l in ipairs(base.layers) do assert.are.equal(l, img.layers[i]) end
      assert.are.same({}, util.readdir(store.dir .. "/tmp"))
    end)
  end)

  it("copies to where the image's links lead, not through the host's", function()
    helper.run(function()
      local store = new_store()
      -- the image gets /lnk -> /etc (a link of the context, copied as one);
      -- COPY into /lnk/ then lands in the image's /etc, never the host's
      local base_ctx = context_tar({ ["f.txt"] = "via link\n", ["lnk"] = { link = "/etc" } }, "c")
      local img, msg = builds(store, table.concat({
        "FROM " .. ref,
        "COPY c/lnk /lnk",
        "COPY c/f.txt /lnk/f.txt",
      }, "\n"), { contexts = { base_ctx }, hashes = { "h2" } })
      assert.is_table(img, msg)
      assert.are.same({ link = "/etc" }, image_file(img, "/lnk"))
      assert.are.equal("via link\n", image_file(img, "/etc/f.txt").text)
      assert.is_nil(util.stat("/etc/f.txt", false))
      -- /bin/sh of the test image is a link: COPY to /bin/sh/x must fail, not
      -- write through it
      local bad, bmsg = builds(store, "FROM " .. ref .. "\nCOPY c/f.txt /bin/sh/x\n", { contexts = { base_ctx }, hashes = { "h2" } })
      assert.is_nil(bad)
      assert.matches("not a directory", bmsg)
    end)
  end)

  it("runs RUN steps in sandboxes whose changes become layers, and caches by content", function()
    helper.run(function()
      local store = new_store()
      local tar = context_tar({ ["in.txt"] = "from the context\n" }, "ctx")
      local df = table.concat({
        "FROM " .. ref,
        "ENV GREETING=hello",
        "RUN echo \"$GREETING from $(id -u)\" > /greeting && mkdir -p /opt/made && rm /etc/layer2",
        "WORKDIR /work",
        "COPY ctx/in.txt ./",
        "RUN cat in.txt > copied && pwd > where && echo out-line",
        "USER daytona",
        "RUN id -un > /tmp/who",
      }, "\n")
      local t0 = core.now()
      local img, msg, _, log = builds(store, df, { contexts = { tar }, hashes = { "c1" } })
      local first = core.now() - t0
      assert.is_table(img, tostring(msg) .. "\n" .. tostring(log))
      assert.matches("\nout%-line\n", log)          -- the step's output
      assert.are.equal("hello from 0\n", image_file(img, "/greeting").text)
      assert.are.equal("from the context\n", image_file(img, "/work/copied").text)
      assert.are.equal("/work\n", image_file(img, "/work/where").text)
      assert.are.equal("daytona\n", image_file(img, "/tmp/who").text)
      assert.are.equal("directory", image_file(img, "/opt/made").type)
      -- a file the step removed is a whiteout in its layer
      assert.are.equal("char", image_file(img, "/etc/layer2").type)
      -- the layers hold what the steps did, not the launcher's own files
      for _, l in ipairs(img.layers) do
        assert.is_nil(util.stat(l .. "/etc/hostname", false), l)
      end
      -- the files made by RUN are the image's root's (0), not a host range's
      assert.are.equal(0, image_file(img, "/greeting").uid)
      assert.are.equal(1000, image_file(img, "/tmp/who").uid)
      -- the same definition again: every step from the cache, the same image
      t0 = core.now()
      local again, msg2, _, log2 = builds(store, df, { contexts = { tar }, hashes = { "c1" } })
      local second = core.now() - t0
      assert.is_table(again, msg2)
      assert.are.equal(img.id, again.id)
      assert.is_nil(log2:find("\nout%-line\n"))     -- nothing ran
      assert.matches("Using cache", log2, 1, true)
      assert.is_true(second < first, ("cache hit %.3f s, first %.3f s"):format(second, first))
      -- a changed step rebuilds from there on
      local changed, msg3, _, log3 = builds(store, df:gsub("out%-line", "changed-line"), { contexts = { tar }, hashes = { "c1" } })
      assert.is_table(changed, msg3)
      assert.matches("\nchanged%-line\n", log3)
      -- steps 2-5 from the cache, 6-8 run again
      assert.are.equal(4, select(2, log3:gsub("Using cache", "")))
      assert.are.same({}, util.readdir(store.dir .. "/tmp"))
    end)
  end)

  it("keeps a hostile RUN step's links inside the image (attacks from inside the build)", function()
    helper.run(function()
      local store = new_store()
      local marker = "dtlua-build-attack-" .. util.hex(util.random_bytes(4))
      -- a sleep no other process on the machine runs
      local secs = 100000 + string.unpack("<I3", util.random_bytes(3))
      local tar = context_tar({ ["payload"] = "pwned\n" }, "ctx")
      -- the step plants links to the host's paths, a link where the
      -- launcher's own /etc/hostname was, and a background process
      local img, msg, _, log = builds(store, table.concat({
        "FROM " .. ref,
        "RUN ln -s /etc /hostetc && ln -s /tmp /hosttmp && rm -f /etc/hostname && ln -s /etc/shadow /etc/hostname"
          .. " && (sleep " .. secs .. " &) && echo planted",
        "COPY ctx/payload /hostetc/" .. marker,
        "COPY ctx/payload /hosttmp/" .. marker,
        "RUN cat /etc/" .. marker .. " /tmp/" .. marker,
      }, "\n"), { contexts = { tar }, hashes = { "atk" } })
      assert.is_table(img, tostring(msg) .. "\n" .. tostring(log))
      -- the copies went where the image's links lead: the image's /etc and /tmp
      assert.are.equal("pwned\n", image_file(img, "/etc/" .. marker).text)
      assert.are.equal("pwned\n", image_file(img, "/tmp/" .. marker).text)
      assert.is_nil(util.stat("/etc/" .. marker, false))
      assert.is_nil(util.stat("/tmp/" .. marker, false))
      -- the planted links are links in the layers, never followed by the import
      assert.are.same({ link = "/etc" }, image_file(img, "/hostetc"))
      assert.are.same({ link = "/etc/shadow" }, image_file(img, "/etc/hostname"))
      -- its background process ended with its sandbox
      local r = assert(process.run({ "pgrep", "-f", "sleep " .. secs }, { timeout = 10 }))
      assert.are_not.equal(0, r.exit_code, r.stdout)
    end)
  end)

  it("holds RUN steps to a sandbox's limits (their own cgroup: pids, memory)", function()
    helper.run(function()
      local store = new_store()
      local cg = require("dtlocal.control.cgroups").new{}
      local lines = {}
      local img, msg = build.build(store, {
        dockerfile = "FROM " .. ref .. "\nRUN cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/pids.max"
          .. " /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max 2>/dev/null; true\n",
        launcher = helper.build_path("libexec/dtlua/dtlua-sandbox"), cgroups = cg,
        on_log = function(l) lines[#lines + 1] = l end })
      local enforced = cg.enforced
      cg:close()
      assert.is_table(img, msg)
      local log = table.concat(lines, "\n") .. "\n"
      -- where the machine lets dtlocal enforce them (else the build runs without)
      if enforced.pids then assert.matches("\n4096\n", log) end
      if enforced.memory then assert.truthy(log:find("\n4294967296\n", 1, true), log) end
    end)
  end)

  it("clips a step's endless output in the log (lines cut at 16 KiB, 2 MiB a step)", function()
    helper.run(function()
      local store = new_store()
      local n, longest, clipped = 0, 0, false
      local img, msg = build.build(store, {
        -- 8 MiB without a newline, then lines
        dockerfile = "FROM " .. ref .. "\nRUN head -c 8388608 /dev/zero | tr '\\0' x; seq 1 100000\n",
        launcher = helper.build_path("libexec/dtlua/dtlua-sandbox"),
        on_log = function(l)
          n = n + #l
          if #l > longest then longest = #l end
          if l:find("output clipped", 1, true) then clipped = true end
        end })
      assert.is_table(img, msg)
      assert.is_true(clipped)
      assert.is_true(longest <= build.MAX_LINE)
      assert.is_true(n <= build.LOG_LIMIT + 4096, tostring(n))
    end)
  end)

  it("fails a RUN step with its step, exit code and output, keeping nothing of it", function()
    helper.run(function()
      local store = new_store()
      local img, msg, code, log = builds(store, "FROM " .. ref .. "\nRUN echo before\nRUN echo oops-output; echo to-stderr >&2; exit 3\n",
        { ref = "dtlocal.local/never:1" })
      assert.is_nil(img)
      assert.are.equal("ESTEP", code)
      assert.matches("step 3/3", msg, 1, true)
      assert.matches("exit code 3", msg, 1, true)
      assert.matches("oops-output", msg, 1, true)
      assert.matches("to-stderr", log, 1, true)
      assert.is_nil(store:image("dtlocal.local/never:1"))
      assert.are.same({}, util.readdir(store.dir .. "/tmp"))
    end)
  end)

  it("sees paths as the overlay will: whiteouts and opaque directories hide what is below", function()
    helper.run(function()
      local store = new_store()
      -- the test image's /opt/opq is opaque over a lower /opt/opq/old; a step
      -- deletes /opt/opq (a whiteout over a directory that had "new")
      local img, msg, _, log = builds(store, table.concat({
        "FROM " .. ref,
        "WORKDIR /opt/opq/old",
        "RUN pwd > /where-old",
        "RUN rm -rf /opt/opq",
        "WORKDIR /opt/opq/new",
        "RUN pwd > /where-new && ls -a /opt/opq/new | wc -l > /count",
      }, "\n"))
      assert.is_table(img, tostring(msg) .. "\n" .. tostring(log))
      assert.are.equal("/opt/opq/old\n", image_file(img, "/where-old").text)
      assert.are.equal("/opt/opq/new\n", image_file(img, "/where-new").text)
      -- made afresh: empty (only . and ..)
      assert.matches("^%s*2\n$", image_file(img, "/count").text)
    end)
  end)

  it("refuses COPY sources outside the context or through its links, and bad context tars", function()
    helper.run(function()
      local store = new_store()
      local tar = context_tar({ ["ok"] = "x", ["ln"] = { link = "/etc" } }, "p")
      local _, msg = builds(store, "FROM " .. ref .. "\nCOPY ../../etc/passwd /x\n", { contexts = { tar }, hashes = { "h" } })
      assert.matches("outside the build context", msg)
      _, msg = builds(store, "FROM " .. ref .. "\nCOPY p/ln/passwd /x\n", { contexts = { tar }, hashes = { "h" } })
      assert.matches("through a symbolic link", msg)
      _, msg = builds(store, "FROM " .. ref .. "\nCOPY p/missing /x\n", { contexts = { tar }, hashes = { "h" } })
      assert.matches("not in the build context", msg)
      -- a tar whose entry climbs out of the context directory
      local dir = helper.tmpdir()
      sh('mkdir -p "$1/a" && echo x > "$1/evil" && cd "$1/a" && tar -c -f ../evil.tar --absolute-names ../evil', dir)
      _, msg = builds(store, "FROM " .. ref .. "\nCOPY evil /x\n", { contexts = { dir .. "/evil.tar" }, hashes = { "e" } })
      assert.matches("refused", msg)
      for _, df in ipairs({ "FROM " .. ref .. "\nFROM " .. ref .. "\n", "FROM " .. ref .. "\nCOPY --from=x /a /b\n",
                            "FROM " .. ref .. "\nADD http://example.com/x /x\n", "RUN true\n",
                            "FROM " .. ref .. "\nHEALTHCHECK CMD true\n", "FROM " .. ref .. "\nBOGUS x\n" }) do
        local img, m = builds(store, df, { contexts = { tar }, hashes = { "h" } })
        assert.is_nil(img, df)
        assert.is_string(m, df)
      end
      assert.are.same({}, util.readdir(store.dir .. "/tmp"))
    end)
  end)
end)
