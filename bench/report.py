"""What ``loom bench produce|consume|e2e|cluster|failover`` shows: the progress bar (on a terminal
only), one line per run, the table of medians with each group's ratio to a reference group (the
first, or cluster's baseline), the ``--json`` document and the ``--chart`` page (self-contained
HTML, inline SVG, no scripts or CDN).

A group is what the runs are medians of: an engine/fsync/api combination, a cluster scenario,
failover's one setup; anything with a ``label`` and an ``as_dict()``.

Document shape (``--json``): the first group's medians at the top (``records_per_s``,
``mb_per_s``, ``latency_ms: {p50, p99, p999}``, ``cpu_us_per_record: {client, cluster}``),
``combinations`` (medians and ratios of each group; an open-loop run adds ``send_delay_ms``,
how late its sends went out against their schedule -- the OpenMessaging Benchmark's publish
delay -- while the ack latency counts from the send, as the peers' benchmarks do; a tail
percentile is null with fewer than 10 timed records above its rank), ``runs`` (every run with
its timeline),
``meta`` and, with ``--peer``, ``peer`` (its figure and its servers' ``cpu_us_per_record:
{cluster}`` and ``server_peak_rss_mb``: bench/peer.py). Pure functions apart from the writers;
not thread-safe.
"""

from __future__ import annotations

import html
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict
from typing import Any, Protocol

from bench.options import BenchOptions

BAR_WIDTH = 30
LAT_KEYS = ("p50", "p99", "p999")
TWO_PHASES = ("consume", "cluster")  # a backlog produced, then drained: the bar counts both


class Group(Protocol):
    """What a table row is the medians of."""

    @property
    def label(self) -> str: ...

    def as_dict(self) -> dict: ...


class Progress:
    """A one-line progress bar on stdout, redrawn at most every sample; silent when disabled."""

    def __init__(self, o: BenchOptions, enabled: bool) -> None:
        self.enabled = enabled
        self.records = o.record_target()
        self.duration = o.duration
        self.phases = 2 if o.command in TWO_PHASES else 1
        self.width = 0

    def fraction(self, p: dict) -> float:
        if "fraction" in p:  # a benchmark that knows better (failover: its runs' steps)
            return min(1.0, p["fraction"])
        if self.records:
            done = p["produced"] + (p["consumed"] if self.phases == 2 else 0)
            return min(1.0, done / (self.records * self.phases))
        return min(1.0, p["elapsed_s"] / self.duration) if self.duration else 0.0

    def tick(self, label: str, p: dict) -> None:
        if not self.enabled:
            return
        f = self.fraction(p)
        filled = int(f * BAR_WIDTH)
        line = (f"\r{label} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {f:4.0%} "
                f"{p['produced']:,} produced {p['consumed']:,} consumed {p['elapsed_s']:.0f} s")
        self.width = max(self.width, len(line))
        sys.stdout.write(line)
        sys.stdout.flush()

    def clear(self) -> None:
        if self.enabled and self.width:
            sys.stdout.write("\r" + " " * self.width + "\r")
            sys.stdout.flush()
            self.width = 0


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if isinstance(v, float) and v < 1000:
        return f"{v:.{digits}f}"
    return f"{v:,.0f}"


def run_line(label: str, r: dict) -> str:
    lat = r.get("latency_ms") or {}
    line = (f"{label}: {r['records_per_s']:,} rec/s, {r['mb_per_s']} MB/s, ack latency p50/p99/p99.9 "
            f"{_fmt(lat.get('p50'))}/{_fmt(lat.get('p99'))}/{_fmt(lat.get('p999'))} ms, cpu us/rec client "
            f"{_fmt(r['cpu_us_per_record']['client'])} cluster {_fmt(r['cpu_us_per_record']['cluster'])}")
    if lat.get("samples") is not None:
        line += f" ({lat['samples']:,} timed)"
    if "send_delay_ms" in r:
        d = r["send_delay_ms"]
        line += f", send delay p50/p99 {_fmt(d['p50'])}/{_fmt(d['p99'])} ms"
    if "e2e_latency_ms" in r:
        e = r["e2e_latency_ms"]
        line += f", e2e p50/p99/p99.9 {_fmt(e['p50'])}/{_fmt(e['p99'])}/{_fmt(e['p999'])} ms"
    if "produce" in r:
        line += f" (backlog produced at {r['produce']['records_per_s']:,} rec/s)"
    if "consume_cpu_us_per_record" in r:  # cluster: produce, then drain
        c = r["consume_cpu_us_per_record"]
        line += (f"; drained at {r['consume_records_per_s']:,} rec/s, cpu us/rec client {_fmt(c['client'])} "
                 f"cluster {_fmt(c['cluster'])}")
    if r.get("stopped_early"):
        line += f" (stopped early: {r['stopped_early']})"
    return line


def median(values: list) -> Any:
    """The median of the values that are not None (None when there is none)."""
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def median_at(runs: list[dict], *path: str) -> Any:
    """The median over ``runs`` of the figure at ``path`` (``"latency_ms", "p99"``); runs
    without it do not count."""
    vals = []
    for r in runs:
        v: Any = r
        for key in path:
            v = v.get(key) if isinstance(v, dict) else None
        vals.append(v)
    return median(vals)


def _summary(runs: list[dict]) -> dict:
    """Medians over the runs of one group."""
    def med(*path: str) -> Any:
        return median_at(runs, *path)
    s: dict = {"runs": len(runs), "records_per_s": med("records_per_s"), "mb_per_s": med("mb_per_s"),
               "latency_ms": {k: med("latency_ms", k) for k in LAT_KEYS},
               "cpu_us_per_record": {k: med("cpu_us_per_record", k) for k in ("client", "cluster")},
               "errors": sum(r.get("errors", 0) for r in runs),
               "disk_write": {k: med("disk_write", k) for k in ("bytes_per_record", "mb_per_s")}}
    if any("send_delay_ms" in r for r in runs):
        s["send_delay_ms"] = {k: med("send_delay_ms", k) for k in LAT_KEYS}
    e2e = any("e2e_latency_ms" in r for r in runs)
    drain = any("consume_cpu_us_per_record" in r for r in runs)  # cluster: the drain after the produce
    if e2e:
        s["e2e_latency_ms"] = {k: med("e2e_latency_ms", k) for k in LAT_KEYS}
    if e2e or drain:
        s["consume_records_per_s"] = med("consume_records_per_s")
    if drain:
        s["consume_mb_per_s"] = med("consume_mb_per_s")
        s["consume_cpu_us_per_record"] = {k: med("consume_cpu_us_per_record", k) for k in ("client", "cluster")}
    if any("produce" in r for r in runs):
        s["produce_records_per_s"] = med("produce", "records_per_s")
    rss: dict[str, float] = {}
    for r in runs:
        for name, mb in r.get("broker_peak_rss_mb", {}).items():
            rss[name] = max(rss.get(name, 0.0), mb)
    s["broker_peak_rss_mb"] = rss
    # the memory trend: each run's fastest-growing broker, the median over runs
    s["broker_rss_growth_mb_per_min"] = median([max(g) for r in runs
                                                 if (g := [v for v in r.get("broker_rss_growth_mb_per_min", {}).values()
                                                           if v is not None])])
    return s


def _ratio(a: Any, b: Any) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def document(o: BenchOptions, groups: list[Group], runs: dict[Any, list[dict]], ratio_to: str | None = None) -> dict:
    """The result document of ``runs`` (group -> its runs), ratios to the group labelled
    ``ratio_to`` (default: the first); the top-level figures are the first group's."""
    summaries = []
    for c in groups:
        s = {"label": c.label, **c.as_dict(), **_summary(runs[c])}
        summaries.append(s)
    first = summaries[0]
    ref = next(s for s in summaries if s["label"] == (ratio_to or first["label"]))
    for s in summaries:
        s["ratio_to_first"] = {"records_per_s": _ratio(s["records_per_s"], ref["records_per_s"]),
                               "p99": _ratio(s["latency_ms"]["p99"], ref["latency_ms"]["p99"])}
        if "consume_cpu_us_per_record" in s:
            s["ratio_to_first"]["consume_records_per_s"] = _ratio(s["consume_records_per_s"],
                                                                  ref.get("consume_records_per_s"))
    meta = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": o.command,
            "argv": sys.argv[1:], "options": {k: v for k, v in asdict(o).items() if k not in ("json", "chart")},
            "cluster": "self-contained" if o.self_contained else (o.config or o.bootstrap),
            "ratio_to": ref["label"] if ratio_to else "the first row",
            "python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "load_avg": os.getloadavg()}
    top = {k: first[k] for k in ("records_per_s", "mb_per_s", "latency_ms", "cpu_us_per_record")}
    return {**top, "meta": meta, "combinations": summaries,
            "runs": [r for c in groups for r in runs[c]]}


def _columns(doc: dict) -> list[tuple[str, Any]]:
    e2e = any("e2e_latency_ms" in s for s in doc["combinations"])
    backlog = any("produce_records_per_s" in s for s in doc["combinations"])
    drain = any("consume_cpu_us_per_record" in s for s in doc["combinations"])
    cols: list[tuple[str, Any]] = [
        ("combination", lambda s: s["label"]), ("runs", lambda s: s["runs"]),
        ("records/s", lambda s: s["records_per_s"]), ("MB/s", lambda s: s["mb_per_s"]),
        ("ack p50 ms", lambda s: s["latency_ms"]["p50"]), ("ack p99", lambda s: s["latency_ms"]["p99"]),
        ("ack p99.9", lambda s: s["latency_ms"]["p999"])]
    if e2e:
        cols += [("e2e p50", lambda s: s["e2e_latency_ms"]["p50"]), ("e2e p99", lambda s: s["e2e_latency_ms"]["p99"]),
                 ("e2e p99.9", lambda s: s["e2e_latency_ms"]["p999"]), ("consumed/s", lambda s: s["consume_records_per_s"])]
    if backlog:
        cols.append(("backlog prod/s", lambda s: s["produce_records_per_s"]))
    if drain:
        cols.append(("consumed/s", lambda s: s.get("consume_records_per_s")))
    cols += [("cpu us/rec client", lambda s: s["cpu_us_per_record"]["client"]),
             ("cluster", lambda s: s["cpu_us_per_record"]["cluster"])]
    if drain:
        cols += [("drain cpu client", lambda s: (s.get("consume_cpu_us_per_record") or {}).get("client")),
                 ("cluster", lambda s: (s.get("consume_cpu_us_per_record") or {}).get("cluster"))]
    cols += [("disk B/rec", lambda s: (s.get("disk_write") or {}).get("bytes_per_record")),
             ("disk MB/s", lambda s: (s.get("disk_write") or {}).get("mb_per_s")),
             ("broker RSS MB max", lambda s: max(s["broker_peak_rss_mb"].values(), default=None)),
             ("RSS MB/min", lambda s: s.get("broker_rss_growth_mb_per_min")),
             ("x rec/s", lambda s: s["ratio_to_first"]["records_per_s"]),
             ("x p99", lambda s: s["ratio_to_first"]["p99"])]
    if drain:
        cols.append(("x consumed/s", lambda s: s["ratio_to_first"].get("consume_records_per_s")))
    return cols


def table_rows(doc: dict) -> tuple[list[str], list[list[str]]]:
    cols = _columns(doc)
    rows = [[_fmt(get(s), 3 if name.startswith("x ") else 2) for name, get in cols] for s in doc["combinations"]]
    return [name for name, _ in cols], rows


def print_table(doc: dict, out: Any = None) -> None:
    out = out or sys.stdout
    head, rows = table_rows(doc)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    out.write(heading(doc))
    out.write("  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(head, widths))) + "\n")
    for r in rows:
        out.write("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) + "\n")
    for s in doc["combinations"]:  # the table's RSS column is the largest: every broker's here
        if s["broker_peak_rss_mb"]:
            out.write(f"{s['label']}: peak RSS MB per broker over its runs: "
                      + ", ".join(f"{n} {_fmt(v, 1)}" for n, v in sorted(s["broker_peak_rss_mb"].items())) + "\n")
    out.write("".join(line + "\n" for line in early_stop_lines(doc)))
    if doc.get("peer"):
        out.write("".join(line + "\n" for line in peer_lines(doc)))


def early_stop_lines(doc: dict) -> list[str]:
    """A line under the table when runs stopped early: its medians include shorter runs."""
    early = [r for r in doc.get("runs", []) if r.get("stopped_early")]
    if not early:
        return []
    return [f"{len(early)} of {len(doc['runs'])} runs stopped early: {early[0]['stopped_early']}"]


_HEADING_TAILS = {"consume": "; ack latency: the backlog's producers",
                  "cluster": "; each scenario produces, then its consumers drain the topic",
                  "failover": "; a leader SIGKILLed in every run: the figures include the outage"}


def heading(doc: dict) -> str:
    """The line over the table: what the medians are of."""
    o, command = doc["meta"]["options"], doc["meta"]["command"]
    shape = f"{o['record_size']}-byte records, {o['partitions']} partitions, "
    if command != "cluster":  # a cluster scenario's name says its RF and acks
        shape += f"RF {o['replication_factor']}, acks={o['acks']}, "
    consumers = command != "produce" and o["consumers"]
    return (f"\nloom bench {command}: medians of {o['runs']} run(s); " + shape + f"{o['producers']} producer(s)"
            + (f", {o['consumers']} consumer(s)" if consumers else "")
            + (f", offered {o['rate']:,} rec/s (open loop)" if o["rate"] else "")
            + _HEADING_TAILS.get(command, "") + f"; x = ratio to {doc['meta'].get('ratio_to', 'the first row')}\n")


def peer_line(doc: dict) -> str:
    p, first = doc["peer"], doc["combinations"][0]
    if p.get("skipped"):
        return f"peer {p['name']}: skipped ({p['skipped']})"
    if "latency_ms" in p:
        lat = p["latency_ms"]
        return (f"peer {p['name']} (same run): ack latency p50/p99/p99.9 {lat['p50']}/{lat['p99']}/{lat['p999']} ms; "
                f"{first['label']} p99 / peer p99 = {_fmt(_ratio(first['latency_ms']['p99'], lat['p99']), 3)}")
    return (f"peer {p['name']} (same run): {p['records_per_s']:,} records/s; "
            f"{first['label']} / peer = {_fmt(_ratio(first['records_per_s'], p['records_per_s']), 2)}x")


def peer_servers_line(doc: dict) -> str | None:
    """The peer's servers beside Loom's cluster: CPU per record and each server's peak RSS;
    None when the peer was skipped or no server was seen."""
    p, first = doc["peer"], doc["combinations"][0]
    if p.get("skipped") or not p.get("servers"):
        return None
    window = p.get("publish_window_cpu_us_per_record")
    loom_rss = max(first["broker_peak_rss_mb"].values(), default=None)
    return (f"peer {p['name']} servers (same run): cluster CPU {_fmt(p['cpu_us_per_record']['cluster'])} us/record "
            f"over the whole script ({p['server_cpu_s']:.1f} s / {p['records_published']:,} records"
            + (f"; {_fmt(window)} in its publish windows" if window is not None else "")
            + f"), {first['label']} {_fmt(first['cpu_us_per_record']['cluster'])}; peak RSS MB per server "
            + ", ".join(f"{n} {_fmt(v, 1)}" for n, v in p["server_peak_rss_mb"].items())
            + f", {first['label']} largest broker {_fmt(loom_rss, 1)}")


def peer_lines(doc: dict) -> list[str]:
    """What the table says of the peer: its figure, then its servers' CPU and memory."""
    servers = peer_servers_line(doc)
    return [peer_line(doc)] + ([servers] if servers else [])


def write_json(path: str, doc: dict) -> None:
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)


# -- the chart -------------------------------------------------------------------------------------
COLOURS = ("#3366cc", "#dc3912", "#ff9900", "#109618", "#990099", "#0099c6", "#dd4477", "#66aa00",
           "#b82e2e", "#316395", "#994499", "#22aa99")
PLOT_W, PLOT_H, PAD = 760, 220, 56
SOLID, DASHED, DOTTED = "", "6,4", "2,3"


def _median_run(runs: list[dict]) -> dict:
    ordered = sorted(runs, key=lambda r: r["records_per_s"])
    return ordered[(len(ordered) - 1) // 2]


def _svg_lines(title: str, unit: str, series: list[tuple[str, str, list[tuple[float, float]], str]],
               markers: list[dict] | None = None) -> str:
    """One line chart: series of (label, colour, [(t_s, value)], SVG dash pattern or "" for solid),
    and vertical markers ``{"t_s", "label"}`` (failover's kill)."""
    markers = markers or []
    xs = [x for _, _, pts, _ in series for x, _ in pts] + [m["t_s"] for m in markers] or [1.0]
    ys = [y for _, _, pts, _ in series for _, y in pts] or [1.0]
    x_max, y_max = max(max(xs), 1e-9), max(max(ys), 1e-9) * 1.1
    sx = lambda x: PAD + PLOT_W * x / x_max  # noqa: E731
    sy = lambda y: PAD / 2 + PLOT_H * (1 - y / y_max)  # noqa: E731
    parts = [f'<line x1="{PAD}" y1="{sy(0)}" x2="{PAD + PLOT_W}" y2="{sy(0)}" stroke="#888"/>',
             f'<line x1="{PAD}" y1="{sy(0)}" x2="{PAD}" y2="{sy(y_max)}" stroke="#888"/>']
    for i in range(5):
        y = y_max * i / 4
        parts.append(f'<text x="{PAD - 4}" y="{sy(y) + 4:.1f}" text-anchor="end">{_fmt(float(y), 2)}</text>')
    for i in range(5):
        x = x_max * i / 4
        parts.append(f'<text x="{sx(x):.1f}" y="{sy(0) + 16:.1f}" text-anchor="middle">{x:.1f} s</text>')
    for m in markers:
        x = sx(m["t_s"])
        parts.append(f'<line x1="{x:.1f}" y1="{sy(0)}" x2="{x:.1f}" y2="{sy(y_max)}" stroke="#555" '
                     f'stroke-dasharray="{DOTTED}"/><text x="{x + 3:.1f}" y="{sy(y_max) + 10:.1f}">'
                     f'{html.escape(m["label"])}</text>')
    for k, (label, colour, pts, dashes) in enumerate(series):
        if pts:
            d = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
            dash = f' stroke-dasharray="{dashes}"' if dashes else ""
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.6"{dash} points="{d}"/>')
            parts += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2" fill="{colour}"/>' for x, y in pts]
        parts.append(f'<text x="{PAD + PLOT_W + 8}" y="{PAD / 2 + 14 * k + 8}" fill="{colour}">'
                     f'{html.escape(label)}</text>')
    height = PLOT_H + PAD + 14
    return (f'<h2>{html.escape(title)} <small>({html.escape(unit)})</small></h2>'
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{PAD + PLOT_W + 280}" height="{height}" '
            f'font-family="sans-serif" font-size="11">{"".join(parts)}</svg>')


def run_label(r: dict) -> str:
    """The label of the group a run belongs to (runs written before runs carried it: from the
    combination)."""
    c = r["combination"]
    return r.get("label") or f"{c['engine']}/{c['fsync']}/{c['api']}"


def chart_html(doc: dict) -> str:
    """The page: throughput and latency over time, one colour per group (its median run by
    records/s; a group without a timeline, like cluster's baseline, is left out), then the
    table of medians."""
    by_label: dict[str, list[dict]] = {}
    for r in doc["runs"]:
        by_label.setdefault(run_label(r), []).append(r)
    command = doc["meta"]["command"]
    key = "consumed_per_s" if command == "consume" else "produced_per_s"
    rate, lat, markers = [], [], []
    for i, s in enumerate(doc["combinations"]):
        colour, run = COLOURS[i % len(COLOURS)], _median_run(by_label[s["label"]])
        tl = run["timeline"]
        if not tl:
            continue
        rate.append((f"{s['label']} {key.split('_')[0]}", colour, [(p["t_s"], p[key]) for p in tl if p[key]], SOLID))
        if key != "consumed_per_s" and any(p["consumed_per_s"] for p in tl):
            rate.append((f"{s['label']} consumed", colour, [(p["t_s"], p["consumed_per_s"]) for p in tl], DASHED))
        lat.append((f"{s['label']} p99", colour, [(p["t_s"], p["p99_ms"]) for p in tl if p["p99_ms"] is not None], SOLID))
        lat.append((f"{s['label']} p50", colour, [(p["t_s"], p["p50_ms"]) for p in tl if p["p50_ms"] is not None], DASHED))
        if any(p["e2e_p99_ms"] is not None for p in tl):
            lat.append((f"{s['label']} e2e p99", colour,
                        [(p["t_s"], p["e2e_p99_ms"]) for p in tl if p["e2e_p99_ms"] is not None], DOTTED))
        markers += run.get("markers", [])
    head, rows = table_rows(doc)
    table = ("<table border=1 cellpadding=3><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
             + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>")
    peer = "".join(f"<p>{html.escape(line)}</p>" for line in peer_lines(doc)) if doc.get("peer") else ""
    return ("<!doctype html><meta charset=utf-8><title>loom bench</title>"
            f"<h1>loom bench {html.escape(command)}</h1>"
            f"<p>{html.escape(doc['meta']['date'])}, {html.escape(' '.join(doc['meta']['argv']))}</p>"
            + _svg_lines("Throughput over time", "records/s per 0.5 s sample; dashed: consumed", rate, markers)
            + _svg_lines("Produce-ack latency over time", "ms; solid p99, dashed p50" +
                         (", dotted end-to-end p99" if any(label.endswith("e2e p99") for label, *_ in lat) else ""),
                         lat, markers)
            + f"<h2>Medians</h2>{table}{peer}"
            f"<pre>{html.escape(json.dumps(doc['meta'], indent=1))}</pre>")


def write_chart(path: str, doc: dict) -> None:
    with open(path, "w") as f:
        f.write(chart_html(doc))
