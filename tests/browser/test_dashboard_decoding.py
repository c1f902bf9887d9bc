"""How the page shows bytes (pretty JSON, UTF-8 text, hex, folding), reads the monitor's
Prometheus text and shows an absent offset, checked on the page's own modules in the browser."""

from __future__ import annotations

EXPOSITION = """# HELP loom_broker_log_bytes Bytes of every partition log on this broker, by engine
# TYPE loom_broker_log_bytes gauge
loom_broker_log_bytes{node="broker-1",engine="segment"} 2048.0
loom_broker_disk_used_ratio{node="broker-1"} 0.25
loom_process_resident_memory_bytes{node="broker-1"} 5.0e+07
loom_process_cpu_seconds_total{node="broker-1"} 12.5
loom_cluster_partitions 9.0
"""


def test_values_are_json_text_or_hex_and_long_ones_fold(dashboard, page) -> None:
    page.goto(dashboard.url + "/")
    got = page.evaluate("""async () => {
      const r = await import('/static/js/records.js');
      const b64 = (s) => r.textToB64(s);
      const bin = btoa(String.fromCharCode(0, 255, 16, 128));
      const long = r.valueCell(b64('x'.repeat(r.FOLD_CHARS + 50)));
      return {
        json: r.decode(b64('{"a":[1,2]}')), text: r.decode(b64('héllo wörld')), hex: r.decode(bin),
        nul: r.decode(null).kind, number: r.decode(b64('42')).kind,
        folded: long.querySelector('details') !== null, short: r.valueCell(b64('hi')).querySelector('details') === null,
      };
    }""")
    assert got["json"]["kind"] == "json" and got["json"]["text"] == '{\n  "a": [\n    1,\n    2\n  ]\n}'
    assert got["text"] == {"kind": "text", "text": "héllo wörld", "raw": "héllo wörld"}
    assert got["hex"]["kind"] == "hex" and got["hex"]["text"] == "00 ff 10 80"
    assert got["nul"] == "null" and got["number"] == "text"
    assert got["folded"] and got["short"]
    assert page.console_errors == []


def test_prometheus_text_gives_per_node_disk_engine_rss_and_cpu(dashboard, page) -> None:
    page.goto(dashboard.url + "/")
    nodes = page.evaluate("async (text) => { const m = await import('/static/js/metrics.js'); return m.perNode(m.parse(text)); }",
                          EXPOSITION)
    assert nodes == {"broker-1": {"log_bytes": 2048, "engine": "segment", "disk_used_ratio": 0.25,
                                  "rss_bytes": 50_000_000, "cpu_seconds": 12.5}}


def test_the_reset_preview_shows_no_committed_offset_as_absent(dashboard, page) -> None:
    """A reset-offsets plan answers current_offset -1 for a partition the group has not
    committed; the preview showed "-1" where the page shows an absent value as "—"."""
    page.goto(dashboard.url + "/")
    cells = page.evaluate("""async () => {
      const g = await import('/static/js/pages/group.js');
      const el = g.resetPlanTable([{ topic_name: 't', partition_id: 0, current_offset: -1, new_offset: 0 },
                                   { topic_name: 't', partition_id: 1, current_offset: 1500, new_offset: 1400 }]);
      return [...el.querySelectorAll('tbody tr')].map((tr) => [...tr.cells].map((td) => td.textContent));
    }""")
    assert cells == [["t-0", "—", "0"], ["t-1", "1,500", "1,400"]]
    assert page.console_errors == []
