#!/usr/bin/env python3
"""The report of bench/run.py: the generated section of bench/results.md
(tables) and the plot bench/results.svg (wall time against node count),
from the raw data run.py writes (bench/out/results.json).

    .venv/bin/python bench/report.py bench/out/results.json [bench/results.md]

Python standard library only: the SVG is written by hand.
"""
from __future__ import annotations

import collections
import json
import math
import statistics
import sys
from pathlib import Path
from xml.sax.saxutils import escape

BEGIN = "<!-- bench:generated:begin (bench/run.py rewrites this section; edit outside it) -->"
END = "<!-- bench:generated:end -->"
KINDS = ("first", "second")
KIND_LABEL = {"first": "first run (fresh nodes)", "second": "second run (nothing to change)"}
COLOURS = {"ours": "#1f6fb4", "baseline": "#d1495b"}
EXTRA_COLOURS = ["#2a9d58", "#8e5cc2", "#e08e0b", "#5c6b73"]


def median(values):
    return statistics.median(values) if values else float("nan")


def walls(data) -> dict:
    """(n, side, kind) -> list of wall seconds."""
    out = collections.defaultdict(list)
    for r in data["runs"]:
        out[(r["n"], r["side"], r["kind"])].append(r["wall"])
    return out


def fmt_s(x: float) -> str:
    return "–" if x != x else f"{x:.2f}"


def task_name(t: dict) -> str:
    name = t["task"]
    # "role : Validating arguments against arg spec 'main' - <the spec's short description>"
    name = name.split(" - ", 1)[0] if "Validating arguments against arg spec" in name else name
    if t.get("handler"):
        name = f"(handler) {name}"
    return name


def host_task_count(run: dict) -> int:
    return sum(sum(t["results"].values()) for t in run["tasks"]) or 1


def task_medians(data, n: int, side: str, kind: str) -> list[tuple[str, float, dict]]:
    """Each task's median seconds over the repeats, in playbook order."""
    per_task = collections.OrderedDict()
    results = {}
    for r in data["runs"]:
        if (r["n"], r["side"], r["kind"]) != (n, side, kind):
            continue
        seen = collections.Counter()
        for t in r["tasks"]:
            # A task that runs twice in a play (a role imported twice) is two rows.
            name = task_name(t)
            seen[name] += 1
            key = name if seen[name] == 1 else f"{name} (again, #{seen[name]})"
            per_task.setdefault(key, []).append(t["seconds"])
            results[key] = t["results"]
    return [(name, median(v), results[name]) for name, v in per_task.items()]


# -- markdown -------------------------------------------------------------------------


def table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def section_setup(data) -> str:
    m, k = data["machine"], data["knobs"]
    counts = " ".join(str(n) for n in k["nodes"])
    return "\n".join([
        f"Run {data['started']} to {data.get('finished', '?')}: node counts {counts}, "
        f"{k['repeats']} repeats, sides {', '.join(k['sides'])}.",
        "",
        f"- Machine: {m['cpu']}, **{m['cores']} cores**, {m['memory_gib']} GiB, {m['os']}, kernel {m['kernel']}; "
        "the controller, every node's sshd and everything the nodes run share these cores.",
        f"- Project at `{m.get('commit')}` (git describe; -dirty: with uncommitted changes).",
        f"- ansible-core {m['ansible_core']} (Python {m['python']}), {m['openssh']}, containerd "
        f"{', '.join(m.get('containerd_nodes') or [m.get('containerd') or '?'])} on the nodes (the sandbox's release).",
        f"- ansible.cfg (both sides): forks = {m['forks']}, pipelining = {m['pipelining']}, "
        f"ssh_args = `{m['ssh_args']}`, fact_caching = {m['fact_caching']}.",
        f"- Extra vars (both sides): `{json.dumps(k['extra_vars'])}`; node profiles cycle "
        f"{', '.join(k['profiles'])} (a quarter cpu).",
    ])


def section_wall(data) -> str:
    w = walls(data)
    sides = data["knobs"]["sides"]
    rows = []
    for n in data["knobs"]["nodes"]:
        for s in sides:
            row = [str(n), s]
            for kind in KINDS:
                v = w.get((n, s, kind), [])
                row.append(f"{fmt_s(median(v))} ({fmt_s(min(v))}–{fmt_s(max(v))})" if v else "–")
            for kind in KINDS:
                base = median(w.get((n, "baseline", kind), []))
                mine = median(w.get((n, s, kind), []))
                ok = s != "baseline" and base == base and mine == mine and base
                row.append(f"**{mine / base:.2f}**" if ok else "–")
            rows.append(row)
    return ("Wall time of `ansible-playbook` in seconds, median of the repeats (min–max), and the ratio of the "
            "medians to the baseline's.\n\n"
            + table(["nodes", "side", "first run", "second run", "first / baseline", "second / baseline"], rows,
                    "llrrrr"))


def runs_of(data, n: int, side: str, kind: str) -> list[dict]:
    return [r for r in data["runs"] if (r["n"], r["side"], r["kind"]) == (n, side, kind)]


def med(data, n, side, kind, key) -> float:
    return median([r[key] if isinstance(key, str) else key(r) for r in runs_of(data, n, side, kind)])


def per_node(r: dict) -> float:
    return host_task_count(r) / r["n"]


def section_goals(data) -> str:
    """Issue 18's goals at 16 and 32 nodes (controller CPU, host-tasks per
    node, wall time against the baseline; cost per node flat as N grows), and
    the module goals of issue 8 (one run at most 2 ms)."""
    counts = data["knobs"]["nodes"]
    lines = []

    def verdict(ok):
        return "**met**" if ok else "**NOT met**"

    for n in (x for x in (16, 32) if x in counts):
        for kind, goal in (("second", 0.6), ("first", 0.8)):
            mine, base = med(data, n, "ours", kind, "controller_cpu"), med(data, n, "baseline", kind, "controller_cpu")
            if mine == mine and base == base:
                lines.append(f"- controller CPU, {kind} run, {n} nodes: {mine:.2f} against {base:.2f} cpu-s = "
                             f"{mine / base:.2f}x, goal at most {goal}x: {verdict(mine / base <= goal)}.")
        tasks = med(data, n, "ours", "second", per_node)
        if tasks == tasks:
            lines.append(f"- host-tasks per node, second run, {n} nodes: {tasks:.2f} (the play's variable check and plan "
                         f"counted too), goal at most 5: {verdict(tasks <= 5)}.")
        mine, base = med(data, n, "ours", "second", "wall"), med(data, n, "baseline", "second", "wall")
        if mine == mine and base == base:
            lines.append(f"- wall time, second run, {n} nodes: {mine:.2f} against {base:.2f} s = {mine / base:.2f}x, "
                         f"goal at most 0.4x: {verdict(mine / base <= 0.4)}.")
    flat = [(n, med(data, n, "ours", "second", "controller_cpu") / n) for n in counts if n >= 16]
    flat = [(n, v) for n, v in flat if v == v]
    if len(flat) >= 2:
        lo, hi = min(v for _, v in flat), max(v for _, v in flat)
        lines.append("- controller CPU per node, second run, as N grows: "
                     + ", ".join(f"{v * 1e3:.0f} ms at {n}" for n, v in flat)
                     + f" (largest/smallest {hi / lo:.2f}; flat within 15%: {verdict(hi / lo <= 1.15)}).")
    for m in (m for m in data.get("modules", []) if m["name"] != "containerd--version"):
        lines.append(f"- {m['label']}: median {m['median_ms']:.2f} ms, goal at most 2 ms: "
                     f"{'met' if m['median_ms'] <= 2 else 'NOT met'}.")
    return "Goals:\n\n" + "\n".join(lines) if lines else ""


# The remote-nodes model's assumptions: a LAN round trip, and what one of our
# module commands costs on a node (fork, exec, a 1 ms module).
RTT_S = 0.001
NODE_WORK_S = 0.002
CONTROLLER_CORES = (2, 8, 32)


def section_model(data) -> str:
    """Fixed cost (the empty play), cost per host-task, and what a real
    cluster should see: the nodes' CPU taken out, the controller's CPU spread
    over K cores, but never below its main process (one core), plus a round
    trip and the node's work per task and node in a row."""
    counts = data["knobs"]["nodes"]
    if not runs_of(data, counts[0], "empty", "second"):
        return ""
    rows, check = [], []
    for n in counts:
        fixed = med(data, n, "empty", "second", "controller_cpu")
        fixed_wall = med(data, n, "empty", "second", "wall")
        for side in ("ours", "baseline"):
            for kind in KINDS:
                rs = runs_of(data, n, side, kind)
                if not rs:
                    continue
                c = median([r["controller_cpu"] for r in rs])
                main = median([r.get("controller_main_cpu", float("nan")) for r in rs])
                ht = median([host_task_count(r) for r in rs])
                tasks = ht / n
                per_ht = (c - fixed) / ht * 1e3
                est = [max(main, c / k) + tasks * (RTT_S + NODE_WORK_S) for k in CONTROLLER_CORES]
                rows.append([str(n), side, kind, fmt_s(fixed), fmt_s(c), fmt_s(main), f"{per_ht:.1f}"]
                            + [fmt_s(e) for e in est])
                wall = median([r["wall"] for r in rs])
                cpu_all = median([r["controller_cpu"] + r["nodes_cpu"] + r["ssh_masters_cpu"] for r in rs])
                other = median([r["other_cpu"] for r in rs])
                cores = data["machine"]["cores"]
                floor = max(main, cpu_all / cores)
                check.append([str(n), side, kind, fmt_s(wall), fmt_s(floor), f"{wall / floor:.2f}", fmt_s(other)])
        rows.append([str(n), "empty play", "–", fmt_s(fixed), fmt_s(fixed), "–", "–"]
                    + [fmt_s(fixed_wall)] * 0 + ["–"] * len(CONTROLLER_CORES))
    head = ["nodes", "side", "run", "fixed cpu-s (empty play)", "controller cpu-s", "main process cpu-s",
            "ms per host-task beyond the fixed cost"] + [f"remote estimate, {k} cores, s" for k in CONTROLLER_CORES]
    return ("**Remote nodes, estimated.** On a real cluster the nodes' own CPU runs on the nodes, so what a run "
            "costs is the controller's: ansible-playbook's main process (strategy, results, callbacks: one core, "
            "whatever the machine) and its workers and ssh clients (spread over the controller's K cores). "
            f"Model: wall ≈ max(main process CPU, controller CPU / K) + tasks per node × (RTT + the node's work), "
            f"with a LAN round trip of {RTT_S * 1e3:g} ms and {NODE_WORK_S * 1e3:g} ms of node work per command "
            "(fork, exec, a 1 ms module); forks at least N. The fixed cost is a play with no task at the same N "
            "(start-up, plugins, inventory, recap); the rest divided by the host-tasks is the cost of one.\n\n"
            + table(head, rows, "lll" + "r" * (len(head) - 3))
            + "\n\nThe model checked on this machine, where everything shares its cores: the floor it predicts "
            "is max(main process CPU, the run's own CPU (controller, nodes, ssh masters) / cores). Measured wall / "
            "floor near 1 means the run was CPU-bound as modelled; above 1, the rest is other people's work on "
            "this machine meanwhile (last column) and waiting (round trips, the linear strategy's barrier after "
            "each task).\n\n"
            + table(["nodes", "side", "run", "measured wall", "model floor", "wall / floor", "other work cpu-s"],
                    check, "lllrrrr"))


def section_cpu(data) -> str:
    groups = collections.defaultdict(list)
    for r in data["runs"]:
        groups[(r["n"], r["side"], r["kind"])].append(r)
    rows = []
    for (n, side, kind), runs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], KINDS.index(kv[0][2]))):
        host_tasks = median([host_task_count(r) for r in runs])
        rows.append([str(n), side, kind, fmt_s(median([r["wall"] for r in runs])),
                     fmt_s(median([r["controller_cpu"] for r in runs])),
                     fmt_s(median([r.get("controller_main_cpu", float("nan")) for r in runs])),
                     fmt_s(median([r["nodes_cpu"] for r in runs])),
                     fmt_s(median([r["ssh_masters_cpu"] for r in runs])),
                     fmt_s(median([r["other_cpu"] for r in runs])),
                     f"{host_tasks:g}", f"{median([per_node(r) for r in runs]):.2f}",
                     f"{median([r['controller_cpu'] / host_task_count(r) * 1e3 for r in runs]):.1f}",
                     str(sum(r.get("attempts", 1) - 1 for r in runs))])
    return ("Where the CPU went (medians, CPU seconds): the controller (ansible-playbook, its workers and the ssh "
            "clients it waited for), the nodes (each node's sshd and everything it ran: shells, Python, our "
            "binaries), the ssh ControlPersist masters, and other work on this machine meanwhile (not ours; "
            "the bench waits a while for a quiet machine before each run and, unless told not to "
            "(`--noise-retries 0`, as `make bench` does), runs a pair again when other work took more than 10% of "
            "the CPUs during it). Host-tasks: task results of the run, one per node and task, "
            "skipped ones included: Ansible's controller pays each one.\n\n"
            + table(["nodes", "side", "run", "wall", "controller", "of which main process", "nodes", "ssh masters",
                     "other", "host-tasks", "per node", "controller ms per host-task", "noisy runs redone"], rows,
                    "lllrrrrrrrrrr"))


def section_tasks(data, n: int, sides=None) -> str:
    parts = [f"Per task at **{n} nodes** (median seconds from the task's start to the next one's; "
             "the tasks of a run add up to its wall time but for start-up and the recap):"]
    for side in sides or data["knobs"]["sides"]:
        first = task_medians(data, n, side, "first")
        second = dict((name, (s, res)) for name, s, res in task_medians(data, n, side, "second"))
        if not first:
            continue
        rows = []
        for name, s, res in first:
            s2, res2 = second.get(name, (float("nan"), {}))
            rows.append([name, fmt_s(s), fmt_s(s2), ", ".join(f"{k} {v}" for k, v in sorted(res.items()))])
        total1 = sum(s for _, s, _ in first)
        total2 = sum(s for s, _ in second.values())
        rows.append(["**total of the tasks**", f"**{total1:.2f}**", f"**{total2:.2f}**", ""])
        parts.append(f"\n{side}:\n\n" + table(["task", "first", "second", "results (first run)"], rows, "lrrl"))
    return "\n".join(parts)


def section_modules(data) -> str:
    if not data.get("modules"):
        return ""
    rows = [[m["label"], f"{m['median_ms']:.2f}", f"{m['min_ms']:.2f}", f"{m['user_ms']:.2f}",
             f"{m['system_ms']:.2f}", str(m["peak_rss_kib"]), str(m["runs"])] for m in data["modules"]]
    bins = [[f"`{b['path']}`", f"{b['bytes']:,}"] for b in data["binaries"]]
    return ("One module run on this machine, as root (hyperfine -N: median, min, mean user and system time; "
            "GNU time `%M`: peak resident memory, median of 15 runs).\n\n"
            + table(["run", "median ms", "min ms", "user ms", "sys ms", "peak RSS KiB", "runs"], rows)
            + "\n\nBinaries (static, stripped):\n\n" + table(["binary", "bytes"], bins))


def section_bytes(data) -> str:
    if not data.get("bytes"):
        return ""
    groups = collections.OrderedDict()
    for b in data["bytes"]:
        groups.setdefault((b["side"], b["kind"]), []).append(b)
    rows = []
    for (side, kind), bs in groups.items():
        ours = side != "baseline"

        def span(key):
            lo, hi = min(b[key] for b in bs), max(b[key] for b in bs)
            return f"{lo:,}" if lo == hi else f"{lo:,}–{hi:,}"

        rows.append([side, kind, span("ssh_sent"), span("ssh_received"), span("ssh_connections"),
                     span("module_commands") if ours else "–", span("module_stdin_bytes") if ours else "–",
                     span("module_install_bytes") if ours else "–"])
    hs = data["bytes"][0]
    nodes = ", ".join(f"{b['node']} {b['profile']}" for b in data["bytes"] if b is not None
                      and (b["side"], b["kind"]) == (data["bytes"][0]["side"], data["bytes"][0]["kind"]))
    return (f"Bytes on the wire per node and run ({nodes}; the range over the nodes): ssh's own count "
            f"(`Transferred: sent N, received M bytes`, LogLevel VERBOSE, one log per node), encrypted, "
            f"handshake included (one connection with nothing in it: sent {hs['handshake_sent']:,}, received "
            f"{hs['handshake_received']:,}). For our sides also what the action plugin piped on stdin (its "
            f"GPU_NODE_MODULE_TRACE log): arguments, and the binaries on a first run.\n\n"
            + table(["side", "run", "ssh sent", "ssh received", "connections", "module commands",
                     "module stdin bytes", "of which binaries"], rows, "llrrrrrr"))


def section_configs(data) -> str:
    if not data.get("configs"):
        return ""
    rows = []
    for c in data["configs"]:
        verdicts = collections.Counter(x["verdict"] for x in c["nodes"])
        runtimes = collections.Counter(f"{x['profile']}→{x['default_runtime']}" for x in c["nodes"])
        rows.append([str(c["n"]), " vs ".join(c["sides"]), ", ".join(f"{v} {k}" for k, v in verdicts.items()),
                     ", ".join(sorted(runtimes))])
    return ("`/etc/containerd/config.toml` on each node after the first run, compared node by node "
            "(every second run of both sides reported changed=0, or the bench would have stopped):\n\n"
            + table(["nodes", "sides", "files", "default runtime per profile"], rows, "llll"))


def generated(data) -> str:
    counts = data["knobs"]["nodes"]
    task_n = 16 if 16 in counts else max(counts)
    parts = [section_setup(data), section_goals(data), section_wall(data),
             "![wall time against node count](results.svg)",
             section_cpu(data), section_model(data), section_tasks(data, task_n)]
    if max(counts) != task_n:
        parts.append(section_tasks(data, max(counts), [s for s in data["knobs"]["sides"] if s in ("ours", "baseline")]))
    parts += [section_modules(data), section_bytes(data), section_configs(data)]
    return "\n\n".join(p for p in parts if p)


def write(data, results: Path, svg: Path):
    body = f"{BEGIN}\n\n{generated(data)}\n\n{END}"
    if results.exists() and BEGIN in results.read_text() and END in results.read_text():
        text = results.read_text()
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        results.write_text(head + body + tail)
    else:
        results.write_text("# Benchmark: our modules against the shell way\n\n" + body + "\n")
    svg.write_text(plot(data))


# -- the plot -----------------------------------------------------------------------------


def plot(data, width=820, height=460) -> str:
    """Wall time against node count: one colour per side, solid first runs,
    dashed second runs, median with a min–max bar."""
    w = walls(data)
    counts = sorted(set(data["knobs"]["nodes"]))
    sides = data["knobs"]["sides"]
    left, right, top, bottom = 64, 240, 40, 56
    pw, ph = width - left - right, height - top - bottom
    ymax_data = max([max(v) for v in w.values()] or [1.0])
    step = nice_step(ymax_data / 5)
    ymax = step * math.ceil(ymax_data / step)
    lo, hi = math.log2(min(counts)), math.log2(max(counts))

    def x(n):
        return left + (pw / 2 if hi == lo else (math.log2(n) - lo) / (hi - lo) * pw)

    def y(v):
        return top + ph - v / ymax * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="22" font-size="15" font-weight="bold">'
           f'site.yml against the guide\'s way: wall time by node count</text>']
    tick = 0.0
    while tick <= ymax + 1e-9:
        out.append(f'<line x1="{left}" y1="{y(tick):.1f}" x2="{left + pw}" y2="{y(tick):.1f}" stroke="#e3e3e3"/>')
        out.append(f'<text x="{left - 8}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:g}</text>')
        tick += step
    for n in counts:
        out.append(f'<line x1="{x(n):.1f}" y1="{top + ph}" x2="{x(n):.1f}" y2="{top + ph + 5}" stroke="#333"/>')
        out.append(f'<text x="{x(n):.1f}" y="{top + ph + 20}" text-anchor="middle">{n}</text>')
    out.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#333"/>')
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="#333"/>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 14}" text-anchor="middle">nodes (log scale)</text>')
    out.append(f'<text transform="translate(18 {top + ph / 2}) rotate(-90)" text-anchor="middle">'
               f'wall time, seconds (median, min–max)</text>')
    legend_y = top + 10
    extra = iter(EXTRA_COLOURS)
    for side in sides:
        colour = COLOURS.get(side) or next(extra)
        for kind in KINDS:
            pts = [(n, median(w[(n, side, kind)]), min(w[(n, side, kind)]), max(w[(n, side, kind)]))
                   for n in counts if w.get((n, side, kind))]
            if not pts:
                continue
            dash = ' stroke-dasharray="6 4"' if kind == "second" else ""
            path = " ".join(f"{'M' if i == 0 else 'L'}{x(n):.1f},{y(m):.1f}" for i, (n, m, _, _) in enumerate(pts))
            out.append(f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
            for n, m, a, b in pts:
                out.append(f'<line x1="{x(n):.1f}" y1="{y(a):.1f}" x2="{x(n):.1f}" y2="{y(b):.1f}" '
                           f'stroke="{colour}" stroke-width="1"/>')
                marker = (f'<circle cx="{x(n):.1f}" cy="{y(m):.1f}" r="3.5" fill="{colour}"/>' if kind == "first" else
                          f'<circle cx="{x(n):.1f}" cy="{y(m):.1f}" r="3.5" fill="white" stroke="{colour}" '
                          f'stroke-width="1.5"/>')
                out.append(marker)
            lx = left + pw + 16
            out.append(f'<line x1="{lx}" y1="{legend_y}" x2="{lx + 28}" y2="{legend_y}" stroke="{colour}" '
                       f'stroke-width="2"{dash}/>')
            out.append(f'<text x="{lx + 34}" y="{legend_y + 4}">{escape(side)}, {escape(kind)} run</text>')
            legend_y += 20
    out.append("</svg>")
    return "\n".join(out) + "\n"


def nice_step(raw: float) -> float:
    if raw <= 0:
        return 1.0
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


if __name__ == "__main__":
    src = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "out/results.json")
    dest = Path(sys.argv[2] if len(sys.argv) > 2 else Path(__file__).parent / "results.md")
    write(json.loads(src.read_text()), dest, dest.with_suffix(".svg"))
