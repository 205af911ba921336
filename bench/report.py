"""From the raw results of every repetition to what people read: the
summary (median and min-max of every number over the repetitions, and the
ours/native ratio taken per repetition), a printed table, results.json,
chart.png and RESULTS.md."""

from __future__ import annotations

import json
import os
import statistics

# One row of the table: (id, benchmark, metric, path into a repetition's
# record after the target, number format).  The ceiling column of B1 shows
# B0: the same SUBSCRIBE answered statelessly.
ROWS = [
    ("B1.rate", "B1 new subscriptions", "max rate (dialogs/s)", ("B1", "best_rate"), "{:.0f}"),
    ("B1.cpu", "B1 new subscriptions", "CPU s / 1000 dialogs, at max rate", ("B1", "cpu_per_1000"), "{:.3g}"),
    ("B1.cpu_common", "B1 new subscriptions", "CPU s / 1000 dialogs, both at {rate}/s",
     ("B1", "cpu_per_1000_common"), "{:.3g}"),
    ("B2.200.p50", "B2 fan-out, 200 watchers", "PUBLISH -> last NOTIFY p50 (ms)", ("B2", "200", "p50_ms"), "{:.1f}"),
    ("B2.200.p99", "B2 fan-out, 200 watchers", "PUBLISH -> last NOTIFY p99 (ms)", ("B2", "200", "p99_ms"), "{:.1f}"),
    ("B2.200.nps", "B2 fan-out, 200 watchers", "NOTIFYs/s", ("B2", "200", "notifies_per_s"), "{:.0f}"),
    ("B2.200.cpu", "B2 fan-out, 200 watchers", "CPU s / 1000 NOTIFYs", ("B2", "200", "cpu_per_1000"), "{:.3g}"),
    ("B2.200.npp", "B2 fan-out, 200 watchers", "NOTIFYs per PUBLISH (distinct)",
     ("B2", "200", "notifies_per_publish"), "{:.1f}"),
    ("B2.1000.p50", "B2 fan-out, 1000 watchers", "PUBLISH -> last NOTIFY p50 (ms)", ("B2", "1000", "p50_ms"), "{:.1f}"),
    ("B2.1000.p99", "B2 fan-out, 1000 watchers", "PUBLISH -> last NOTIFY p99 (ms)", ("B2", "1000", "p99_ms"), "{:.1f}"),
    ("B2.1000.nps", "B2 fan-out, 1000 watchers", "NOTIFYs/s", ("B2", "1000", "notifies_per_s"), "{:.0f}"),
    ("B2.1000.cpu", "B2 fan-out, 1000 watchers", "CPU s / 1000 NOTIFYs", ("B2", "1000", "cpu_per_1000"), "{:.3g}"),
    ("B2.1000.npp", "B2 fan-out, 1000 watchers", "NOTIFYs per PUBLISH (distinct)",
     ("B2", "1000", "notifies_per_publish"), "{:.1f}"),
    ("BLF.200.p50", "BLF (dialog), 200 watchers", "PUBLISH -> last NOTIFY p50 (ms)", ("BLF", "200", "p50_ms"), "{:.1f}"),
    ("BLF.200.p99", "BLF (dialog), 200 watchers", "PUBLISH -> last NOTIFY p99 (ms)", ("BLF", "200", "p99_ms"), "{:.1f}"),
    ("BLF.200.nps", "BLF (dialog), 200 watchers", "NOTIFYs/s", ("BLF", "200", "notifies_per_s"), "{:.0f}"),
    ("BLF.200.cpu", "BLF (dialog), 200 watchers", "CPU s / 1000 NOTIFYs", ("BLF", "200", "cpu_per_1000"), "{:.3g}"),
    ("RLS.p50", "RLS, 50 lists of 10", "member's change -> every list NOTIFY, median of 10 (ms)",
     ("RLS", "latency_median_ms"), "{:.1f}"),
    ("RLS.max", "RLS, 50 lists of 10", "member's change -> every list NOTIFY, max (ms)",
     ("RLS", "latency_max_ms"), "{:.1f}"),
    ("RLS.npc", "RLS, 50 lists of 10", "list NOTIFYs per change", ("RLS", "notifies_per_change"), "{:.1f}"),
    ("RLS.kb", "RLS, 50 lists of 10", "KB of NOTIFYs per change", ("RLS", "kbytes_per_change"), "{:.1f}"),
    ("RLS.cpu", "RLS, 50 lists of 10", "CPU s / 1000 list NOTIFYs", ("RLS", "cpu_per_1000"), "{:.3g}"),
    ("B3.rate", "B3 publications", "max rate (PUBLISH+refresh/s)", ("B3", "best_rate"), "{:.0f}"),
    ("B3.cpu", "B3 publications", "CPU s / 1000 PUBLISH+refresh, at max rate", ("B3", "cpu_per_1000"), "{:.3g}"),
    ("B3.cpu_common", "B3 publications", "CPU s / 1000 PUBLISH+refresh, both at {rate}/s",
     ("B3", "cpu_per_1000_common"), "{:.3g}"),
    ("B4.rate", "B4 two nodes, one database", "max rate, new dialogs over both nodes (dialogs/s)",
     ("B4", "best_rate"), "{:.0f}"),
    ("B4.cpu", "B4 two nodes, one database", "CPU s / 1000 dialogs, at max rate", ("B4", "cpu_per_1000"), "{:.3g}"),
    ("B4.cpu_common", "B4 two nodes, one database", "CPU s / 1000 dialogs, both at {rate}/s",
     ("B4", "cpu_per_1000_common"), "{:.3g}"),
    ("B4.fanout.p50", "B4 two nodes, one database", "fan-out {watchers} watchers: PUBLISH -> last NOTIFY p50 (ms)",
     ("B4", "fanout", "p50_ms"), "{:.1f}"),
    ("B4.fanout.p99", "B4 two nodes, one database", "fan-out {watchers} watchers: PUBLISH -> last NOTIFY p99 (ms)",
     ("B4", "fanout", "p99_ms"), "{:.1f}"),
    ("B4.fanout.nps", "B4 two nodes, one database", "fan-out: NOTIFYs/s", ("B4", "fanout", "notifies_per_s"), "{:.0f}"),
    ("B4.fanout.cpu", "B4 two nodes, one database", "fan-out: CPU s / 1000 NOTIFYs",
     ("B4", "fanout", "cpu_per_1000"), "{:.3g}"),
    ("B4.fanout.npp", "B4 two nodes, one database", "fan-out: NOTIFYs per PUBLISH (distinct)",
     ("B4", "fanout", "notifies_per_publish"), "{:.1f}"),
    ("B4.fanout.dup", "B4 two nodes, one database", "fan-out: NOTIFYs repeating a change the watcher had (goal 0)",
     ("B4", "fanout", "duplicate_notifies"), "{:.0f}"),
    ("B4.expiry.once", "B4 two nodes, one database",
     "expiry under the fan-out: subscriptions ended by exactly one NOTIFY (of {expiring})",
     ("B4", "fanout", "expiry", "terminated_once"), "{:.0f}"),
    ("B4.expiry.bad", "B4 two nodes, one database", "expiry: missing + duplicated final NOTIFYs (goal 0)",
     ("B4", "fanout", "expiry", "wrong"), "{:.0f}"),
]
# The flatness rows, per kind of stored rows: (kind, label, operation).
FLAT_ROWS = [("subscriptions", "stored subscriptions", "dialogs (B1)"),
             ("publications", "stored publications", "PUBLISH+refresh (B3)"),
             ("watched", "presentities with 2 watchers each", "dialogs (B1)")]
for _kind, _label, _op in FLAT_ROWS:
    _bench = f"flatness (ours): {_label}"
    ROWS += [
        (f"FLAT.{_kind}.few", _bench, f"CPU s / 1000 {_op}, {{few}} stored",
         ("FLAT", _kind, "few", "cpu_per_1000"), "{:.3g}"),
        (f"FLAT.{_kind}.many", _bench, f"CPU s / 1000 {_op}, {{many}} stored",
         ("FLAT", _kind, "many", "cpu_per_1000"), "{:.3g}"),
        (f"FLAT.{_kind}.ratio", _bench, "many / few (flat: <= 1.10)", ("FLAT", _kind, "ratio"), "{:.3f}"),
        (f"FLAT.{_kind}.db", _bench, "database size with {many} stored (MB, data + index)",
         ("FLAT", _kind, "many", "db_mb"), "{:.0f}"),
        (f"FLAT.{_kind}.rss_few", _bench, "mariadbd RSS with {few} stored (MB, restarted for each case)",
         ("FLAT", _kind, "few", "mariadb_rss_mb"), "{:.0f}"),
        (f"FLAT.{_kind}.rss", _bench, "mariadbd RSS with {many} stored (MB, restarted for each case)",
         ("FLAT", _kind, "many", "mariadb_rss_mb"), "{:.0f}"),
        (f"FLAT.{_kind}.seed", _bench, "seconds to store {many} rows", ("FLAT", _kind, "many", "seed_s"), "{:.0f}"),
    ]
# Numbers in a metric's label, taken from ours' record: placeholder ->
# path relative to the row's path (its first `keep` elements, then more).
PLACEHOLDERS = {
    "rate": (1, ("common_rate",)),
    "watchers": (2, ("watchers",)),
    "expiring": (3, ("subscriptions",)),
    "few": (2, ("few_rows",)),
    "many": (2, ("many_rows",)),
}
FLAT_GOAL = 1.10


def flatness(few: float | None, many: float | None, goal: float = FLAT_GOAL) -> dict:
    """The ratio of CPU per operation with many stored rows to that with
    few, and whether it meets the goal (None when one is missing)."""
    ratio = round(many / few, 3) if few and many else None
    return {"ratio": ratio, "flat": ratio is not None and ratio <= goal}


def label_number(value: float) -> str:
    """1000000 -> "1 000 000": the thousands grouped as the README writes them."""
    if value == int(value):
        return f"{int(value):,}".replace(",", " ")
    return f"{value:g}"


# Where the ceiling column of a row comes from (target "ceiling", benchmark B0).
CEILING = {"B1.rate": ("B0", "best_rate"), "B1.cpu": ("B0", "cpu_per_1000")}
COLUMNS = ("ours", "native", "ceiling", "ours/native")


def _capped(record: dict, target: str, path: tuple) -> bool:
    """Whether a rate search stopped at --max-rate without a failing step."""
    outcome = record.get(path[0], {}).get(target)
    return isinstance(outcome, dict) and path[-1] == "best_rate" and bool(outcome.get("capped"))


def _get(record: dict, target: str, path: tuple):
    node = record.get(path[0], {}).get(target)
    for key in path[1:]:
        if not isinstance(node, dict):
            return None
        if key == "wrong" and "missing" in node:
            # Expiry: what went wrong, missing and duplicated final NOTIFYs.
            return node.get("missing", 0) + node.get("duplicated", 0)
        node = node.get(key)
    return node if isinstance(node, (int, float)) and not isinstance(node, bool) else None


def stats(values: list) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values), "values": values}


def summarize(results: dict) -> dict:
    repeats = results.get("repeats", [])
    summary = {}
    for row_id, _, metric, path, _ in ROWS:
        cells = {}
        for target in ("ours", "native"):
            cells[target] = stats([_get(r, target, path) for r in repeats])
            if cells[target] and any(_capped(r, target, path) for r in repeats):
                cells[target]["capped"] = True
        if row_id in CEILING:
            cells["ceiling"] = stats([_get(r, "ceiling", CEILING[row_id]) for r in repeats])
            if cells["ceiling"] and any(_capped(r, "ceiling", CEILING[row_id]) for r in repeats):
                cells["ceiling"]["capped"] = True
        ratios = []
        for r in repeats:
            o, n = _get(r, "ours", path), _get(r, "native", path)
            ratios.append(o / n if o is not None and n else None)
        cells["ours/native"] = stats(ratios)
        # The numbers in the label (the common rate, the rows stored...) may
        # differ between repetitions: their median, from ours' record.
        for name, (keep, more) in PLACEHOLDERS.items():
            if "{" + name + "}" in metric:
                cells[name] = stats([_get(r, "ours", path[:keep] + more) for r in repeats])
        summary[row_id] = cells
    summary["B0.rate"] = {"ceiling": stats([_get(r, "ceiling", ("B0", "best_rate")) for r in repeats])}
    summary["B0.cpu"] = {"ceiling": stats([_get(r, "ceiling", ("B0", "cpu_per_1000")) for r in repeats])}
    return summary


def _cell(s: dict | None, fmt: str) -> str:
    if s is None:
        return "-"
    # ">=": the search reached --max-rate and never failed.
    text = (">=" if s.get("capped") else "") + fmt.format(s["median"])
    if s["n"] > 1:
        text += f" [{fmt.format(s['min'])}-{fmt.format(s['max'])}]"
    return text


def table_rows(summary: dict) -> list[list[str]]:
    rows = []
    for row_id, bench, metric, _, fmt in ROWS:
        cells = summary[row_id]
        if not any(cells.get(c) for c in COLUMNS):
            continue  # not measured in this run (--only, --targets)
        metric = metric.format(**{name: label_number(cells[name]["median"]) if cells.get(name) else "?"
                                  for name in PLACEHOLDERS})
        rows.append([bench, metric] + [
            _cell(cells.get(c), "{:.2f}" if c == "ours/native" else fmt) for c in COLUMNS])
    return rows


HEADER = ["benchmark", "metric", "ours", "native", "ceiling (B0)", "ours/native"]


def text_table(summary: dict) -> str:
    rows = [HEADER] + table_rows(summary)
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = []
    for n, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(summary: dict) -> str:
    rows = [HEADER, ["---"] * len(HEADER)] + table_rows(summary)
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def errors(results: dict) -> list[str]:
    found = [f"run: {results['error']}"] if results.get("error") else []
    for i, rec in enumerate(results.get("repeats", []), 1):
        for bench, targets in rec.items():
            for target, outcome in targets.items():
                if not isinstance(outcome, dict):
                    continue
                if outcome.get("error"):
                    found.append(f"repetition {i}, {bench} {target}: {outcome['error'][:300]}")
                for key, sub in outcome.items():
                    if isinstance(sub, dict) and sub.get("error"):
                        found.append(f"repetition {i}, {bench} {target} {key}: {sub['error'][:300]}")
    return found


# -- chart ------------------------------------------------------------------

def chart(summary: dict, path: str) -> str | None:
    """Four panels; error bars span min-max over the repetitions.
    Returns why no chart was drawn, if so."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib missing (bench/run installs python3-matplotlib)"
    colours = {"ours": "#1f77b4", "native": "#ff7f0e", "ceiling": "#7f7f7f"}
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))

    def bars(ax, groups, targets, title, ylabel, log=False):
        width = 0.8 / len(targets)
        for i, target in enumerate(targets):
            xs, ys, lo, hi = [], [], [], []
            for g, (label, row_id) in enumerate(groups):
                s = summary.get(row_id, {}).get(target)
                if s is None:
                    continue
                xs.append(g + (i - (len(targets) - 1) / 2) * width)
                ys.append(s["median"])
                lo.append(s["median"] - s["min"])
                hi.append(s["max"] - s["median"])
            if xs:
                drawn = ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=target,
                               color=colours[target])
                ax.bar_label(drawn, labels=[f"{y:.0f}" if y >= 100 else f"{y:.3g}" for y in ys], fontsize=7, padding=2)
        ax.set_xticks(range(len(groups)), [label for label, _ in groups], fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
        if not ax.patches:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
            return
        if log:
            ax.set_yscale("log")
        ax.legend()

    # The ceiling bars sit in the B1 group (B0 is B1's SUBSCRIBE, stateless).
    bars(axes[0][0], [("B1 SUBSCRIBE (ceiling: B0)", "B1.rate"), ("B3 PUBLISH+refresh", "B3.rate"),
                      ("B4 SUBSCRIBE, 2 nodes", "B4.rate")],
         ("ours", "native", "ceiling"), "Highest sustained rate", "operations / s", log=True)
    bars(axes[0][1], [("B1\ndialog", "B1.cpu"), ("B3\nPUBLISH pair", "B3.cpu"),
                      ("B2 NOTIFY\n(200)", "B2.200.cpu"), ("B2 NOTIFY\n(1000)", "B2.1000.cpu"),
                      ("B4\ndialog", "B4.cpu"), ("B4\nNOTIFY", "B4.fanout.cpu")],
         ("ours", "native", "ceiling"), "Server CPU per 1000 operations (Kamailio + mariadbd),\nat each target's highest passing rate",
         "CPU seconds", log=True)
    bars(axes[1][0], [("200\np50", "B2.200.p50"), ("200\np99", "B2.200.p99"),
                      ("1000\np50", "B2.1000.p50"), ("1000\np99", "B2.1000.p99"),
                      ("B4 200\np50", "B4.fanout.p50"), ("B4 200\np99", "B4.fanout.p99")],
         ("ours", "native"), "B2, B4: PUBLISH to last watcher's NOTIFY", "ms", log=True)
    bars(axes[1][1], [(f"{kind}\nmany / few", f"FLAT.{kind}.ratio") for kind, _, _ in FLAT_ROWS],
         ("ours",), "Flatness: CPU per operation, many stored rows / few", "ratio")
    if any(summary.get(f"FLAT.{kind}.ratio", {}).get("ours") for kind, _, _ in FLAT_ROWS):
        # The flatness goal: many stored rows cost at most 10% more.
        axes[1][1].axhline(FLAT_GOAL, color="black", linestyle="--", linewidth=1,
                           label=f"goal {FLAT_GOAL:.2f}")
        axes[1][1].legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


# -- files --------------------------------------------------------------------

def markdown(results: dict, summary: dict, chart_note: str | None) -> str:
    m = results["machine"]
    s = results["settings"]
    repeats = len(results.get("repeats", []))
    lines = [
        "# Presence agent benchmark: ours vs Kamailio's presence modules",
        "",
        f"Date: {results['date']}" + (" (interrupted: partial results)" if results.get("interrupted") else ""),
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu_model']}, {m['cores']} cores; RAM {m['ram_gb']} GB; kernel {m['kernel']}",
        f"- load average at start: {', '.join(map(str, m['load_average_at_start']))} (shared machine)",
        f"- {m['kamailio']}; {m['mariadb']}; Python {m['python']}; {m['sipp']}",
        "",
        "## Code measured",
        "",
        f"- commit {results.get('project', {}).get('commit', 'unknown')}"
        + (f", with {len(results['project']['uncommitted_changes'])} uncommitted change(s) "
           "outside bench/ (listed in results.json)"
           if results.get("project", {}).get("uncommitted_changes") else ""),
        "",
        "## Settings",
        "",
        f"- {repeats} repetition(s){' (--quick)' if s['quick'] else ''}; rate steps of {s['duration']:g} s, "
        f"tail {s['tail']:g} s; search from {s['start_rate']:g}/s growing x{s['factor']:g}, "
        f"{s['bisections']} bisection(s)",
        f"- Kamailio: {s['children']} workers per transport (UDP and TCP), {s['shm']} MB shared memory, memory manager {s.get('allocator') or 'qm (default)'}",
        f"- MariaDB: `{' '.join(results.get('mariadb', {}).get('flags', []))}`",
        "",
        "## Results",
        "",
        "Each cell: median over the repetitions, [min-max] when there were several. "
        "ours/native is taken per repetition. CPU is user+system time of all Kamailio "
        "processes and the private mariadbd, from /proc, over the measured window.",
        "",
        markdown_table(summary),
        "",
    ]
    if chart_note:
        lines += [f"No chart: {chart_note}", ""]
    else:
        lines += ["![results](chart.png)", ""]
    errs = errors(results)
    if errs:
        lines += ["## Failures", ""] + [f"- {e}" for e in errs] + [""]
    return "\n".join(lines)


def write(results: dict, out: str) -> None:
    summary = summarize(results)
    results["summary"] = summary
    os.makedirs(out, exist_ok=True)
    chart_note = None
    try:
        chart_note = chart(summary, os.path.join(out, "chart.png"))
    except Exception as e:  # a chart problem must not lose the numbers
        chart_note = f"{type(e).__name__}: {e}"
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(out, "RESULTS.md"), "w") as f:
        f.write(markdown(results, summary, chart_note))
    print()
    print(text_table(summary))
    for e in errors(results):
        print("failure:", e)
    print(f"\nresults: {os.path.join(out, 'results.json')}, {os.path.join(out, 'RESULTS.md')}"
          + ("" if chart_note else f", {os.path.join(out, 'chart.png')}"))
