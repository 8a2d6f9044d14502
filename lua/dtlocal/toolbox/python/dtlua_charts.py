"""dtlua_charts: the matplotlib backend of dtlocal's Python code-run.

dtlocal's toolbox daemon runs Python code-run with
MPLBACKEND=module://dtlua_charts and this directory on PYTHONPATH
(lua/dtlocal/toolbox/exec.lua), so `plt.show()` lands here instead of
opening a window. Each open figure is described in Daytona's chart format
and printed on stdout as one artifact line

    dtn_artifact_k39fd2:{"type": "chart", "value": {<chart>}}

which the daemon takes out of `result` and returns in `artifacts.charts`
(doc/protocol.md, section 4.3). A chart is the figure's one axes
(`line`, `scatter`, `bar`, `pie`, `box_and_whisker` or `unknown`, with
title, axis labels, ticks, scales and elements) or, for several axes, a
`composite_chart` whose elements are those charts; the whole figure's
PNG goes with it, base64-encoded.

Field types follow the toolbox API's schema as the official SDKs decode
it: ticks and points are numbers (a date axis gives matplotlib's date
numbers and says `datetime` in its scale; the tick labels carry the
text), a bar's `value` is a string. Non-finite numbers are left out, since
JSON has none.

A script that picks another backend itself (`matplotlib.use("Agg")`)
gets no charts: the backend is how the hook is reached at all.
"""

import base64
import io
import json
import math
import sys

from matplotlib import _pylab_helpers
from matplotlib.axes import Axes
from matplotlib.backend_bases import FigureManagerBase
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection
from matplotlib.container import BarContainer
from matplotlib.patches import Wedge

MARKER = "dtn_artifact_k39fd2:"

# pyplot asks the backend module for these two names
FigureCanvas = FigureCanvasAgg
FigureManager = FigureManagerBase


# --- boxplots -------------------------------------------------------------
# A boxplot leaves only lines (and, with patch_artist, patches) behind; the
# statistics it was drawn from are seen only on their way into Axes.bxp,
# which boxplot() (and seaborn) call. Keep them on the axes they went to.
_bxp = Axes.bxp


def _recording_bxp(self, bxpstats, *args, **kwargs):
    drawn = _bxp(self, bxpstats, *args, **kwargs)
    boxes = self.__dict__.setdefault("_dtlua_boxes", [])
    boxes.extend(dict(s) for s in bxpstats)
    return drawn


Axes.bxp = _recording_bxp


# --- numbers ---------------------------------------------------------------

def _num(v):
    """A finite float, or None (JSON has no NaN or infinity)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _nums(values):
    out = []
    for v in values:
        f = _num(v)
        if f is not None:
            out.append(f)
    return out


def _points(xy):
    out = []
    for x, y in xy:
        fx, fy = _num(x), _num(y)
        # a NaN is how matplotlib breaks a line; the gap has no point
        if fx is not None and fy is not None:
            out.append([fx, fy])
    return out


def _value_text(v):
    f = _num(v)
    if f is None:
        return ""
    return str(int(f)) if f.is_integer() else repr(f)


def _label(artist):
    # matplotlib names what stays out of the legend "_child0", "_container1"...
    text = artist.get_label() or ""
    return "" if text.startswith("_") else str(text)


# --- one axes ----------------------------------------------------------------

def _converter(axis):
    get = getattr(axis, "get_converter", None)
    return get() if get else getattr(axis, "converter", None)


def _scale(axis, ax_scale):
    module = type(_converter(axis)).__module__
    if module == "matplotlib.dates":
        return "datetime"
    if module == "matplotlib.category":
        return "categorical"
    return ax_scale


def _tick_label_at(axis, pos):
    """The tick label drawn at data position pos, else the number itself."""
    for tick, text in zip(axis.get_majorticklocs(), axis.get_majorticklabels()):
        if abs(tick - pos) < 1e-9 * max(1.0, abs(pos)) and text.get_text():
            return text.get_text()
    return _value_text(pos)


def _data_lines(ax):
    # axhline / axvline live in axes coordinates on one side: guides, not data
    return [ln for ln in ax.lines if ln.get_transform() == ax.transData]


def _kind(ax):
    if ax.__dict__.get("_dtlua_boxes"):
        return "box_and_whisker"
    lines = _data_lines(ax)
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    in_bars = {id(p) for c in bars for p in c.patches}
    wedges = [p for p in ax.patches if isinstance(p, Wedge)]
    other_patches = [p for p in ax.patches if id(p) not in in_bars and not isinstance(p, Wedge)]
    scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
    other_collections = [c for c in ax.collections if not isinstance(c, PathCollection)]
    if other_patches or other_collections or ax.images:
        return "unknown"
    present = [name for name, items in
               (("line", lines), ("bar", bars), ("pie", wedges), ("scatter", scatters)) if items]
    return present[0] if len(present) == 1 else "unknown"


def _line_elements(ax):
    return [{"label": _label(ln), "points": _points(ln.get_xydata())} for ln in _data_lines(ax)]


def _scatter_elements(ax):
    return [{"label": _label(c), "points": _points(c.get_offsets())}
            for c in ax.collections if isinstance(c, PathCollection)]


def _bar_elements(ax):
    elements = []
    groups = [c for c in ax.containers if isinstance(c, BarContainer)]
    for n, c in enumerate(groups, 1):
        group = _label(c) or ("group %d" % n if len(groups) > 1 else "")
        horizontal = getattr(c, "orientation", None) == "horizontal"
        values = getattr(c, "datavalues", None)
        for i, rect in enumerate(c.patches):
            if horizontal:
                where = _tick_label_at(ax.yaxis, rect.get_y() + rect.get_height() / 2)
                value = rect.get_width()
            else:
                where = _tick_label_at(ax.xaxis, rect.get_x() + rect.get_width() / 2)
                value = rect.get_height()
            if values is not None and i < len(values):
                value = values[i]
            elements.append({"label": where, "group": group, "value": _value_text(value)})
    return elements


def _pie_elements(ax):
    return [{"label": _label(w), "angle": _num(abs(w.theta2 - w.theta1)), "radius": _num(w.r)}
            for w in ax.patches if isinstance(w, Wedge)]


def _box_elements(ax):
    elements = []
    for n, s in enumerate(ax.__dict__.get("_dtlua_boxes", []), 1):
        elements.append({
            # boxplot() numbers its boxes from 1 on the axis when unlabelled
            "label": str(s.get("label", n)),
            "min": _num(s.get("whislo")),
            "first_quartile": _num(s.get("q1")),
            "median": _num(s.get("med")),
            "third_quartile": _num(s.get("q3")),
            "max": _num(s.get("whishi")),
            "outliers": _nums(s.get("fliers", [])),
        })
    return elements


_ELEMENTS = {
    "line": _line_elements,
    "scatter": _scatter_elements,
    "bar": _bar_elements,
    "pie": _pie_elements,
    "box_and_whisker": _box_elements,
}


def _axes_chart(ax):
    kind = _kind(ax)
    x_labels = [t.get_text() for t in ax.xaxis.get_majorticklabels()]
    y_labels = [t.get_text() for t in ax.yaxis.get_majorticklabels()]
    return {
        "type": kind,
        "title": ax.get_title(),
        "x_label": ax.get_xlabel(),
        "y_label": ax.get_ylabel(),
        "x_ticks": _nums(ax.get_xticks()),
        "y_ticks": _nums(ax.get_yticks()),
        "x_tick_labels": x_labels,
        "y_tick_labels": y_labels,
        "x_scale": _scale(ax.xaxis, ax.get_xscale()),
        "y_scale": _scale(ax.yaxis, ax.get_yscale()),
        "elements": _ELEMENTS[kind](ax) if kind in _ELEMENTS else [],
    }


# --- one figure ----------------------------------------------------------------

def _charted_axes(fig):
    # a colorbar is an axes of its own, and plt.subplots(2, 2) with one
    # panel left empty has one that shows nothing: neither is a chart
    return [ax for ax in fig.axes
            if not hasattr(ax, "_colorbar") and (ax.has_data() or ax.__dict__.get("_dtlua_boxes"))]


def _figure_title(fig):
    sup = getattr(fig, "_suptitle", None)
    return sup.get_text() if sup is not None else ""


def describe(fig):
    """The chart of a figure, as the JSON-ready dict of Daytona's format."""
    png = io.BytesIO()
    # drawn first: tick labels are only known once the figure was drawn
    fig.savefig(png, format="png", bbox_inches="tight")
    axes = _charted_axes(fig)
    if len(axes) == 1:
        chart = _axes_chart(axes[0])
        chart["title"] = chart["title"] or _figure_title(fig)
    elif axes:
        chart = {"type": "composite_chart", "title": _figure_title(fig),
                 "elements": [_axes_chart(ax) for ax in axes]}
    else:
        chart = {"type": "unknown", "title": _figure_title(fig), "elements": []}
    chart["png"] = base64.b64encode(png.getvalue()).decode("ascii")
    return chart


def emit(fig):
    try:
        chart = describe(fig)
        line = MARKER + json.dumps({"type": "chart", "value": chart}, allow_nan=False)
    except Exception as e:  # pylint: disable=broad-except
        # the user's program goes on; the reason shows in its output
        print("dtlua_charts: figure %s not returned as a chart: %s: %s"
              % (fig.number, type(e).__name__, e), file=sys.stderr)
        return
    out = sys.__stdout__ or sys.stdout
    # whatever the user printed before show() comes before the chart
    sys.stdout.flush()
    out.write(line + "\n")
    out.flush()


def show(*args, **kwargs):  # pylint: disable=unused-argument
    """pyplot.show(): every open figure becomes a chart, then all are closed
    (as a window closing would), so the next show() sends only new ones."""
    for manager in _pylab_helpers.Gcf.get_all_fig_managers():
        emit(manager.canvas.figure)
    _pylab_helpers.Gcf.destroy_all()
