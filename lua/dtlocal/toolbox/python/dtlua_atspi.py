"""dtlua_atspi: the accessibility routes of dtlocal's toolbox daemon
(/computeruse/a11y/*, doc/protocol.md section 4.9), over AT-SPI.

The daemon runs `python3 dtlua_atspi.py` once per request, with the
desktop's environment (DISPLAY; the AT-SPI bus is found through the X
root window, where the session's at-spi-bus-launcher announces it), writes
one JSON request on stdin and reads one JSON answer on stdout:

    {"op": "tree", "scope": "focused"|"pid"|"all", "pid": N, "maxDepth": N}
    {"op": "find", "scope", "pid", "role", "name", "nameMatch", "states", "limit"}
    {"op": "focus", "id"} | {"op": "invoke", "id", "action"} | {"op": "value", "id", "value"}
 -> {"result": {...}} or {"error": "message", "status": 400|404|500}

A node's id is "<pid>" for an application and "<pid>/<i>/<j>/..." for the
node reached from it by child indexes: stable as long as the application's
tree keeps its shape. An application that exposes no accessibility data
gives an empty tree (a root without children), not an error.
"""

import json
import re
import sys

MAX_NODES = 5000      # a tree or a search stops there (and says truncated)
TIMEOUT_MS = 2000     # per AT-SPI call: a hung application does not hang us


def fail(message, status=400):
    sys.stdout.write(json.dumps({"error": message, "status": status}))
    sys.exit(0)


try:
    import gi
    gi.require_version("Atspi", "2.0")
    from gi.repository import Atspi
except Exception as e:  # pragma: no cover - depends on the host
    fail("AT-SPI is not available (%s): install the Debian packages "
         "gir1.2-atspi-2.0 and at-spi2-core (`make deps`)" % e, 503)


class Budget:
    def __init__(self):
        self.left = MAX_NODES
        self.truncated = False

    def take(self):
        if self.left <= 0:
            self.truncated = True
            return False
        self.left -= 1
        return True


def safe(fn, default=None):
    try:
        return fn()
    except Exception:
        return default


def states_of(acc):
    st = safe(acc.get_state_set)
    if st is None:
        return []
    return sorted(s.value_nick for s in st.get_states())


def bounds_of(acc):
    ext = safe(lambda: acc.get_extents(Atspi.CoordType.SCREEN))
    if ext is None:
        return {"x": 0, "y": 0, "width": 0, "height": 0}
    return {"x": ext.x, "y": ext.y, "width": ext.width, "height": ext.height}


def actions_of(acc):
    n = safe(acc.get_n_actions, 0) or 0
    return [safe(lambda i=i: acc.get_action_name(i), "") for i in range(n)]


def node(acc, nid, with_children=None):
    out = {
        "id": nid,
        "role": (safe(acc.get_role_name, "") or "").replace(" ", "_"),
        "name": safe(acc.get_name, "") or "",
        "bounds": bounds_of(acc),
        "states": states_of(acc),
    }
    desc = safe(acc.get_description, "")
    if desc:
        out["description"] = desc
    acts = actions_of(acc)
    if acts:
        out["actions"] = acts
    if with_children is not None:
        out["children"] = with_children
    return out


def children(acc):
    n = safe(acc.get_child_count, 0) or 0
    for i in range(min(n, MAX_NODES)):
        c = safe(lambda i=i: acc.get_child_at_index(i))
        if c is not None:
            yield i, c


def subtree(acc, nid, depth, budget):
    """The node with its children down to depth (-1: all)."""
    kids = []
    if depth != 0:
        for i, c in children(acc):
            if not budget.take():
                break
            kids.append(subtree(c, "%s/%d" % (nid, i), depth - 1, budget))
    elif safe(acc.get_child_count, 0):
        budget.truncated = True
    return node(acc, nid, kids)


def applications():
    desk = Atspi.get_desktop(0)
    for _, app in children(desk):
        pid = safe(app.get_process_id)
        if pid:
            yield pid, app


def app_by_pid(pid):
    for p, app in applications():
        if p == pid:
            return app
    return None


def focused_app():
    """The application whose window is active, or None. The daemon asks
    the X server first (the active window's pid); this is the fallback.
    AT-SPI also marks windows nobody sees as active (a window manager's
    helper window off screen): only one on the screen counts."""
    for pid, app in applications():
        for _, win in children(app):
            b = bounds_of(win)
            if "active" in states_of(win) and "showing" in states_of(win) \
                    and b["width"] > 10 and b["height"] > 10 and b["x"] + b["width"] > 0 and b["y"] + b["height"] > 0:
                return pid, app
    return None, None


def empty_root(nid, role="application"):
    return {"id": nid, "role": role, "name": "", "bounds": {"x": 0, "y": 0, "width": 0, "height": 0},
            "states": [], "children": []}


def roots(req):
    """(id, accessible) pairs the scope covers; the accessible may be None."""
    scope = req.get("scope") or "focused"
    if scope == "all":
        return [("%d" % pid, app) for pid, app in applications()], scope
    if scope == "pid":
        pid = req.get("pid")
        return [("%d" % pid, app_by_pid(pid))], scope
    pid, app = focused_app()
    return ([("%d" % pid, app)] if app is not None else []), scope


def resolve(nid):
    if not isinstance(nid, str) or not re.match(r"^\d+(/\d+)*$", nid):
        fail("invalid node id %r: expected <pid>/<index>/..." % (nid,), 400)
    parts = [int(p) for p in nid.split("/")]
    acc = app_by_pid(parts[0])
    if acc is None:
        fail("no accessible application with pid %d" % parts[0], 404)
    for i in parts[1:]:
        n = safe(acc.get_child_count, 0) or 0
        c = safe(lambda: acc.get_child_at_index(i)) if i < n else None
        if c is None:
            fail("accessibility node %s not found (the application's tree changed?)" % nid, 404)
        acc = c
    return acc


def op_tree(req):
    depth = req.get("maxDepth", -1)
    budget = Budget()
    found, scope = roots(req)
    if scope == "all":
        kids = []
        for nid, app in found:
            if not budget.take():
                break
            kids.append(subtree(app, nid, depth - 1 if depth > 0 else depth, budget) if depth != 0
                        else node(app, nid, []))
        if depth == 0 and found:
            budget.truncated = True
            kids = []
        root = {"id": "desktop", "role": "desktop_frame", "name": "main",
                "bounds": {"x": 0, "y": 0, "width": 0, "height": 0}, "states": [], "children": kids}
        return {"root": root, "truncated": budget.truncated}
    if not found or found[0][1] is None:
        nid = found[0][0] if found else "0"
        return {"root": empty_root(nid), "truncated": False}
    nid, app = found[0]
    return {"root": subtree(app, nid, depth, budget), "truncated": budget.truncated}


def op_find(req):
    role = req.get("role")
    name = req.get("name")
    how = req.get("nameMatch") or "substring"
    want = set(req.get("states") or [])
    limit = req.get("limit") or 100
    rx = None
    if name is not None and how == "regex":
        try:
            rx = re.compile(name)
        except re.error as e:
            fail("invalid request body: field 'name' is not a valid regex: %s" % e, 400)
    role = role.replace(" ", "_").lower() if role else None

    def name_ok(n):
        if name is None:
            return True
        if how == "exact":
            return n == name
        if how == "regex":
            return rx.search(n) is not None
        return name.lower() in n.lower()

    matches = []
    budget = Budget()
    truncated = False
    found, _ = roots(req)
    stack = [(nid, acc) for nid, acc in reversed(found) if acc is not None]
    while stack:
        nid, acc = stack.pop()
        if not budget.take():
            truncated = True
            break
        r = (safe(acc.get_role_name, "") or "").replace(" ", "_").lower()
        if (role is None or r == role) and name_ok(safe(acc.get_name, "") or ""):
            if not want or want.issubset(set(states_of(acc))):
                if len(matches) >= limit:
                    truncated = True
                    break
                matches.append(node(acc, nid))
        kids = list(children(acc))
        for i, c in reversed(kids):
            stack.append(("%s/%d" % (nid, i), c))
    return {"matches": matches, "truncated": truncated or budget.truncated}


def op_focus(req):
    acc = resolve(req.get("id"))
    ok = safe(lambda: acc.grab_focus(), False)
    if not ok:
        fail("node %s cannot take the focus (it has no AT-SPI component, or refused)" % req["id"], 400)
    return {}


def op_invoke(req):
    acc = resolve(req.get("id"))
    names = actions_of(acc)
    if not names:
        fail("node %s has no actions" % req["id"], 400)
    action = req.get("action")
    if action:
        if action not in names:
            fail("node %s has no action %r (it has: %s)" % (req["id"], action, ", ".join(names)), 400)
        i = names.index(action)
    else:
        i = 0
    if not safe(lambda: acc.do_action(i), False):
        fail("action %r of node %s failed" % (names[i], req["id"]), 400)
    return {}


def op_value(req):
    acc = resolve(req.get("id"))
    value = req.get("value", "")
    if safe(lambda: acc.get_editable_text_iface(), None) is not None:
        if safe(lambda: acc.set_text_contents(value), False):
            return {}
    if safe(lambda: acc.get_value_iface(), None) is not None:
        try:
            num = float(value)
        except ValueError:
            fail("invalid request body: field 'value' must be a number for node %s (a %s)"
                 % (req["id"], safe(acc.get_role_name, "")), 400)
        if safe(lambda: acc.set_current_value(num), False):
            return {}
    fail("node %s takes no value (neither editable text nor a value)" % req["id"], 400)


OPS = {"tree": op_tree, "find": op_find, "focus": op_focus, "invoke": op_invoke, "value": op_value}


def main():
    try:
        req = json.loads(sys.stdin.read())
    except ValueError as e:
        fail("bad request to the helper: %s" % e, 500)
    fn = OPS.get(req.get("op"))
    if fn is None:
        fail("unknown operation %r" % req.get("op"), 500)
    Atspi.set_timeout(TIMEOUT_MS, TIMEOUT_MS)
    result = fn(req)
    sys.stdout.write(json.dumps({"result": result}))


if __name__ == "__main__":
    main()
