#!/usr/bin/env python3
"""Turns the benchmarks' JSON output into PNG plots.

    python3 bench/plot.py --out DIR FILE_OR_DIR...

Inputs (a directory stands for the *.json files in it) are told apart by content:

* a benchmark's `--json FILE` output ({"benchmark": ..., "results": [...]}, see
  bench/json_out.hpp) gives ratios_<stem>.png: each result's ratio tandem/baseline as a bar,
  green where its target is met, red where not, grey where it has none, the target drawn on
  the bar's row. The hybrid benchmark's file also gives hybrid_<stem>.png (per op, median time
  against batch size, log-log: learned placement, CPU-only, GPU-only, best fixed split, the
  oracle and the old fixed 4096-task threshold), hybrid_ratio_<stem>.png (learned / oracle
  per size with the 1.05 target) and hybrid_split_<stem>.png (at the large size: time against
  the fixed CPU share swept, with the learned placement and the oracle). The server
  benchmark's file also gives server_<stem>.png (ping percentiles per mode).
* a Chrome / Perfetto trace (Trace Event Format: {"traceEvents": [...]} or a bare list) gives
  trace_<stem>.png: one row per (pid, tid) track, named from the "M" process_name /
  thread_name events, "X" (and B/E) events as bars colored by name (H2D, kernel, D2H, cpu
  chunk, batch, ...), over the window --window-ms selects; overlapping events of one track are
  stacked in sub-rows so that nothing hides.

Needs matplotlib (Debian: apt-get install python3-matplotlib); nothing else.
"""

import argparse
import collections
import json
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

MET, NOT_MET, NO_TARGET = "#2e9e44", "#d1342f", "#9a9a9a"

# Trace colors by event name (case-insensitive prefix/substring), then a palette for the rest.
NAMED_COLORS = [
    ("h2d", "#1f77b4"),
    ("kernel", "#ff7f0e"),
    ("d2h", "#2ca02c"),
    ("cpu", "#9467bd"),
    ("batch", "#7f7f7f"),
]
PALETTE = ["#8c564b", "#e377c2", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#c5b0d5"]


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def expand(inputs):
    for p in inputs:
        if os.path.isdir(p):
            for name in sorted(os.listdir(p)):
                if name.endswith(".json"):
                    yield os.path.join(p, name)
        else:
            yield p


def stem(path):
    return os.path.splitext(os.path.basename(path))[0]


def machine_line(doc):
    m = doc.get("machine") or {}
    parts = []
    if m.get("gpu"):
        n = m.get("gpu_count") or 1
        parts.append(m["gpu"] if n <= 1 else "%d x %s" % (n, m["gpu"]))
    if m.get("cpu"):
        parts.append(m["cpu"])
    if m.get("hardware_threads"):
        parts.append("%s hardware threads" % m["hardware_threads"])
    if doc.get("time_utc"):
        parts.append(doc["time_utc"])
    return ", ".join(parts)


def save(fig, out, name):
    path = os.path.join(out, name)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    print(path)
    return path


def fmt_num(v):
    if v is None:
        return "-"
    if v == 0 or 0.01 <= abs(v) < 1e5:
        return "%.3g" % v
    return "%.2e" % v


# ---- (a) ratios ----------------------------------------------------------------------------


def plot_ratios(doc, name, out):
    results = [r for r in doc.get("results", []) if r.get("ratio") is not None]
    if not results:
        return None
    n = len(results)
    fig, ax = plt.subplots(figsize=(10, 0.45 * n + 1.6))
    ys = list(range(n))[::-1]
    ratios = [r["ratio"] for r in results]
    colors = []
    for r in results:
        met = r.get("met")
        colors.append(NO_TARGET if met is None else MET if met else NOT_MET)
    positive = [v for v in ratios + [r["target"] for r in results if r.get("target")] if v and v > 0]
    log = bool(positive) and max(positive) / min(positive) > 20
    if log:  # bars grow from 1 either way: better or worse than the baseline, on a log scale
        ax.barh(ys, [r - 1 for r in ratios], left=1, color=colors, height=0.6)
        ax.set_xscale("log")
    else:
        ax.barh(ys, ratios, color=colors, height=0.6)
    ax.axvline(1.0, color="black", linewidth=0.8, linestyle=":")
    for y, r in zip(ys, results):
        label = "%.3f  (%s / %s %s)" % (r["ratio"], fmt_num(r.get("tandem")), fmt_num(r.get("baseline")), r.get("unit", ""))
        ax.text(max(r["ratio"], r.get("target") or 0, 1.0 if log else 0.0), y, "  " + label, va="center", fontsize=8)
        if r.get("target_op") and r.get("target") is not None:
            ax.plot([r["target"], r["target"]], [y - 0.42, y + 0.42], color="black", linewidth=2)
            ax.text(r["target"], y + 0.32, " %s%g" % (r["target_op"].replace("<=", "≤").replace(">=", "≥"), r["target"]),
                    fontsize=7, va="bottom")
    ax.set_yticks(ys)
    ax.set_yticklabels([r["name"] for r in results], fontsize=8)
    lo, hi = ax.get_xlim()
    ax.set_xlim(lo, hi * (3 if log else 1.45))  # room for the labels
    ax.set_xlabel("ratio tandem / baseline (target drawn as a black bar on each row)")
    ax.set_title("%s: ratios against each baseline\n%s" % (doc.get("benchmark", name), machine_line(doc)), fontsize=10)
    ax.legend(handles=[Patch(color=MET, label="target met"), Patch(color=NOT_MET, label="target not met"),
                       Patch(color=NO_TARGET, label="no target")], loc="lower right", fontsize=8)
    return save(fig, out, "ratios_%s.png" % name)


# ---- (b) hybrid ----------------------------------------------------------------------------


def grid(count):
    cols = 1 if count == 1 else 2
    rows = math.ceil(count / cols)
    return rows, cols


def plot_hybrid(doc, name, out):
    paths = []
    by_op = collections.OrderedDict()
    for row in doc.get("sizes", []):
        by_op.setdefault(row["op"], []).append(row)
    if by_op:
        rows, cols = grid(len(by_op))
        fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.5 * rows), squeeze=False)
        series = [
            ("learned_s", "learned placement", dict(color="#d62728", linewidth=2.2, marker="o")),
            ("cpu_only_s", "CPU only", dict(color="#9467bd", marker="s", markersize=4)),
            ("gpu_only_s", "GPU only", dict(color="#1f77b4", marker="^", markersize=4)),
            ("best_split_s", "best fixed split", dict(color="#2ca02c", marker="D", markersize=4, linestyle="none")),
            ("oracle_s", "oracle (best of all)", dict(color="black", linestyle="--", linewidth=1)),
            ("fixed4096_s", "fixed 4096-task threshold", dict(color="#7f7f7f", linestyle=":", marker=".")),
        ]
        for ax, (op, pts) in zip(axes.flat, by_op.items()):
            pts = sorted(pts, key=lambda p: p["size"])
            for key, label, style in series:
                xy = [(p["size"], p[key]) for p in pts if p.get(key) is not None and p[key] > 0]
                if xy:
                    ax.plot([x for x, _ in xy], [y for _, y in xy], label=label, **style)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(op, fontsize=10)
            ax.set_xlabel("batch size (tasks)")
            ax.set_ylabel("median time per batch (s)")
            ax.grid(True, which="major", alpha=0.3)
        for ax in list(axes.flat)[len(by_op):]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=8)
        fig.suptitle("hybrid: time against batch size, learned vs forced placements\n%s" % machine_line(doc), fontsize=10)
        fig.tight_layout()
        paths.append(save(fig, out, "hybrid_%s.png" % name))

        fig, ax = plt.subplots(figsize=(8, 4.5))
        for i, (op, pts) in enumerate(by_op.items()):
            pts = sorted(pts, key=lambda p: p["size"])
            color = PALETTE[i % len(PALETTE)] if i >= 4 else ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"][i]
            xs = [p["size"] for p in pts if p.get("oracle_s")]
            ax.plot(xs, [p["learned_s"] / p["oracle_s"] for p in pts if p.get("oracle_s")], marker="o", color=color,
                    label="%s learned" % op)
            ax.plot(xs, [p["fixed4096_s"] / p["oracle_s"] for p in pts if p.get("oracle_s")], linestyle=":",
                    marker=".", color=color, alpha=0.6, label="%s fixed 4096" % op)
        ax.axhline(1.05, color="black", linewidth=1.2, label="target ≤ 1.05")
        ax.axhline(1.0, color="black", linewidth=0.6, linestyle=":")
        ax.set_xscale("log")
        ax.set_xlabel("batch size (tasks)")
        ax.set_ylabel("time / oracle")
        ax.set_title("hybrid: learned placement against the oracle per batch size\n%s" % machine_line(doc), fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        paths.append(save(fig, out, "hybrid_ratio_%s.png" % name))

    large = doc.get("large", [])
    if large:
        rows, cols = grid(len(large))
        fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.2 * rows), squeeze=False)
        for ax, op in zip(axes.flat, large):
            sweep = sorted((s["cpu_share"], s["s"]) for s in op.get("cpu_shares", []) if s.get("s"))
            if sweep:
                ax.plot([x for x, _ in sweep], [y * 1e3 for _, y in sweep], marker="o", color="#2ca02c",
                        label="fixed CPU share")
            if op.get("learned_s"):
                frac = op.get("learned_cpu_fraction")
                ax.axhline(op["learned_s"] * 1e3, color="#d62728", linewidth=2, label="learned placement")
                if frac is not None:
                    ax.plot([frac], [op["learned_s"] * 1e3], marker="*", markersize=14, color="#d62728",
                            linestyle="none", label="learned: its CPU share")
            if op.get("oracle_s"):
                ax.axhline(op["oracle_s"] * 1e3, color="black", linestyle="--", linewidth=1,
                           label="oracle (%s)" % op.get("oracle", "best"))
                ax.axhline(op["oracle_s"] * 1.03e3, color="black", linestyle=":", linewidth=0.8,
                           label="target: oracle × 1.03")
            ax.set_xlabel("share of the tasks on the CPU (0 = GPU only, 1 = CPU only)")
            ax.set_ylabel("median time (ms)")
            ax.set_title("%s at %s tasks%s" % (op["op"], op.get("size"), " (page-locked)" if op.get("pinned") else ""),
                         fontsize=10)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
        for ax in list(axes.flat)[len(large):]:
            ax.axis("off")
        fig.suptitle("hybrid: the learned split against every fixed split\n%s" % machine_line(doc), fontsize=10)
        fig.tight_layout()
        paths.append(save(fig, out, "hybrid_split_%s.png" % name))
    return paths


# ---- server --------------------------------------------------------------------------------


def plot_server(doc, name, out):
    modes = doc.get("modes", [])
    if not modes:
        return None
    fig, ax = plt.subplots(figsize=(10, 0.55 * len(modes) + 1.5))
    ys = list(range(len(modes)))[::-1]
    for key, label, color in [("ping_max_us", "max", "#dddddd"), ("ping_p99_us", "p99", "#ff7f0e"),
                              ("ping_p90_us", "p90", "#1f77b4"), ("ping_p50_us", "p50", "#2ca02c")]:
        ax.barh(ys, [max(m.get(key) or 0, 1e-3) for m in modes], color=color, height=0.6, label=label)
    ax.set_xscale("log")
    ax.set_yticks(ys)
    ax.set_yticklabels([m["mode"] for m in modes], fontsize=8)
    ax.set_xlabel("ping round trip (µs), log scale")
    ax.legend(fontsize=8)
    ax.set_title("server responsiveness: ping latency while heavy requests run\n%s" % machine_line(doc), fontsize=10)
    return save(fig, out, "server_%s.png" % name)


# ---- (c) trace timeline --------------------------------------------------------------------


def color_for(name, assigned):
    if name not in assigned:
        low = name.lower()
        for key, color in NAMED_COLORS:
            if key in low:
                assigned[name] = color
                break
        else:
            others = sum(1 for n in assigned if not any(k in n.lower() for k, _ in NAMED_COLORS))
            assigned[name] = PALETTE[others % len(PALETTE)]
    return assigned[name]


def trace_spans(events):
    """(pid, tid, name, start_us, dur_us) of every complete event: X, and matched B/E pairs."""
    spans = []
    open_ = collections.defaultdict(list)
    for e in events:
        ph = e.get("ph")
        if ph == "X":
            spans.append((e.get("pid", 0), e.get("tid", 0), e.get("name", "?"), float(e["ts"]), float(e.get("dur", 0))))
        elif ph == "B":
            open_[(e.get("pid", 0), e.get("tid", 0))].append(e)
        elif ph == "E":
            stack = open_[(e.get("pid", 0), e.get("tid", 0))]
            if stack:
                b = stack.pop()
                spans.append((b.get("pid", 0), b.get("tid", 0), e.get("name") or b.get("name", "?"), float(b["ts"]),
                              float(e["ts"]) - float(b["ts"])))
    return spans


def lanes(spans):
    """Greedy sub-rows so overlapping spans of one track do not cover each other."""
    ends = []
    out = []
    for s in sorted(spans, key=lambda s: (s[3], -s[4])):
        for i, end in enumerate(ends):
            if end <= s[3]:
                ends[i] = s[3] + s[4]
                out.append((i, s))
                break
        else:
            ends.append(s[3] + s[4])
            out.append((len(ends) - 1, s))
    return max(len(ends), 1), out


def parse_window(text):
    if not text:
        return None
    parts = [float(p) for p in text.replace(":", ",").split(",") if p.strip()]
    if len(parts) == 1:
        return 0.0, parts[0]
    if len(parts) == 2 and parts[1] > parts[0]:
        return parts[0], parts[1]
    raise SystemExit("--window-ms: give LEN or START,END (ms from the trace's first event), END > START")


def plot_trace(doc, name, out, window_ms):
    events = doc["traceEvents"] if isinstance(doc, dict) else doc
    process_names, thread_names, process_sort, thread_sort = {}, {}, {}, {}
    for e in events:
        if e.get("ph") != "M":
            continue
        args = e.get("args") or {}
        key = (e.get("pid", 0), e.get("tid", 0))
        if e.get("name") == "process_name":
            process_names[key[0]] = args.get("name", str(key[0]))
        elif e.get("name") == "thread_name":
            thread_names[key] = args.get("name", str(key[1]))
        elif e.get("name") == "process_sort_index":
            process_sort[key[0]] = args.get("sort_index", 0)
        elif e.get("name") == "thread_sort_index":
            thread_sort[key] = args.get("sort_index", 0)
    spans = trace_spans(events)
    if not spans:
        print("%s: no X or B/E events, no timeline" % name, file=sys.stderr)
        return None
    t0 = min(s[3] for s in spans)
    total_ms = (max(s[3] + s[4] for s in spans) - t0) / 1e3
    lo_ms, hi_ms = window_ms if window_ms else (0.0, total_ms)
    lo, hi = t0 + lo_ms * 1e3, t0 + hi_ms * 1e3
    clipped = []
    for pid, tid, ev, start, dur in spans:
        end = start + dur
        if end < lo or start > hi:
            continue
        s, e = max(start, lo), min(end, hi)
        clipped.append((pid, tid, ev, s, max(e - s, 0.0)))
    if not clipped:
        print("%s: no events in the window %g..%g ms" % (name, lo_ms, hi_ms), file=sys.stderr)
        return None

    def sort_key(track):
        pid, tid = track
        return (process_sort.get(pid, 0), str(pid) if not isinstance(pid, int) else "", pid if isinstance(pid, int) else 0,
                thread_sort.get(track, 0), tid if isinstance(tid, int) else 0, str(tid))

    by_track = collections.defaultdict(list)
    for s in clipped:
        by_track[(s[0], s[1])].append(s)
    tracks = sorted(by_track, key=sort_key)
    layout = [(t,) + lanes(by_track[t]) for t in tracks]
    rows = sum(n for _, n, _ in layout)
    fig, ax = plt.subplots(figsize=(13, 0.32 * rows + 0.35 * len(tracks) + 1.8))
    assigned = {}
    y = 0.0
    ticks, labels = [], []
    for track, n, placed in reversed(layout):
        height = 0.8 / n
        for lane, (_, _, ev, start, dur) in placed:
            ax.broken_barh([((start - t0) / 1e3, dur / 1e3)], (y + 0.1 + (n - 1 - lane) * height, height * 0.92),
                           facecolors=color_for(ev, assigned), edgecolor="white", linewidth=0.3)
        pid, tid = track
        label = "%s / %s" % (process_names.get(pid, "pid %s" % pid), thread_names.get(track, "tid %s" % tid))
        ticks.append(y + 0.5)
        labels.append(label)
        y += 1.0
        ax.axhline(y, color="#eeeeee", linewidth=0.5)
    ax.set_yticks(ticks)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_ylim(0, y)
    ax.set_xlim(lo_ms, hi_ms)
    ax.set_xlabel("time (ms) from the trace's first event")
    handles = [Patch(color=c, label=n) for n, c in sorted(assigned.items(), key=lambda kv: kv[0].lower())]
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title("pipeline timeline: %s, %.3f..%.3f ms of %.3f ms (%d events shown)" %
                 (name, lo_ms, hi_ms, total_ms, len(clipped)), fontsize=10)
    ax.grid(True, axis="x", alpha=0.3)
    return save(fig, out, "trace_%s.png" % name)


# ---- main ----------------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="See the module docstring (bench/plot.py) for the plots drawn.")
    parser.add_argument("inputs", nargs="+", help="benchmark --json files, trace JSON files, or directories of them")
    parser.add_argument("--out", required=True, help="directory the PNGs are written to (created if missing)")
    parser.add_argument("--window-ms", metavar="LEN|START,END",
                        help="trace plots: only this window, in ms from the trace's first event (default: all)")
    args = parser.parse_args(argv)
    window = parse_window(args.window_ms)
    os.makedirs(args.out, exist_ok=True)
    written = 0
    for path in expand(args.inputs):
        try:
            doc = load(path)
        except (OSError, ValueError) as e:
            print("%s: skipped (%s)" % (path, e), file=sys.stderr)
            continue
        name = stem(path)
        if isinstance(doc, list) or (isinstance(doc, dict) and "traceEvents" in doc):
            written += plot_trace(doc, name, args.out, window) is not None
        elif isinstance(doc, dict) and "results" in doc:
            written += plot_ratios(doc, name, args.out) is not None
            if doc.get("benchmark") == "hybrid":
                written += len(plot_hybrid(doc, name, args.out))
            if doc.get("modes"):
                written += plot_server(doc, name, args.out) is not None
        else:
            print("%s: skipped (neither a benchmark's --json output nor a trace)" % path, file=sys.stderr)
    if written == 0:
        print("no plots written", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
