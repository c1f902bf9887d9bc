"""How the page shows bytes (pretty JSON, UTF-8 text, hex, folding), reads the monitor's
Prometheus text, shows an absent offset and counts records when a partition's offsets are
unknown, checked on the page's own modules in the browser."""

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



def test_a_missing_key_shows_as_missing_headers_do_and_an_empty_one_apart(dashboard, page) -> None:
    """A record with no key showed "null" where missing headers show "—"."""
    page.goto(dashboard.url + "/")
    got = page.evaluate("""async () => {
      const r = await import('/static/js/records.js');
      return {none: r.keyCell(null).textContent, empty: r.keyCell('').textContent, key: r.keyCell(r.textToB64('k1')).textContent,
              headers: r.headersCell([]).textContent};
    }""")
    assert got == {"none": "—", "empty": '""', "key": "k1", "headers": "—"}
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


def test_a_partition_with_unknown_offsets_is_shown_unknown_not_minus_one_or_zero(dashboard, page) -> None:
    """The gateway answers -1 for the offsets of a partition whose leader it did not hear from
    (a broker restarting). The topic page showed "-1" as start, end offset and high watermark
    and counted the partition's records as 0, so the topic's total dropped (2,004 records, then
    2,003); the topics list and the overview counted its high watermark as 0 too, and when the
    leader answered again its whole log counted as records produced in one refresh (a records/s
    that never happened). Unknown is shown "—", the totals say unknown, and a rate counts only
    the partitions known in both samples."""
    page.goto(dashboard.url + "/")
    got = page.evaluate("""async () => {
      const c = await import('/static/js/cluster.js');
      const t = await import('/static/js/pages/topic.js');
      const known = (id, start, hw) => ({ partition_id: id, leader: { broker_id: 1 }, leader_epoch: 0, isr: [1],
        replicas: [{ broker_id: 1, is_leader: true, is_in_sync: true }], under_replicated: false,
        log_start_offset: start, end_offset: hw, high_watermark: hw });
      const unknown = known(1, -1, -1);
      const both = [known(0, 0, 3), known(1, 0, 2001)];
      const oneUnknown = [known(0, 0, 3), unknown];
      const cells = [...t.partitionTable(oneUnknown).querySelectorAll('tbody tr')]
        .map((tr) => [...tr.cells].slice(6).map((td) => td.textContent));
      const hw = (parts) => c.highWatermarks([{ topic_name: 'orders', partitions: parts }]);
      return {
        cells,
        held: [c.recordsHeld(both), c.recordsHeld(oneUnknown)],
        // 2 s apart: both known (3 records more), then a leader goes silent, then it answers again
        rates: [c.recordsPerSecond(hw(both), hw([known(0, 0, 6), known(1, 0, 2001)]), 2),
                c.recordsPerSecond(hw(both), hw(oneUnknown), 2),
                c.recordsPerSecond(hw(oneUnknown), hw(both), 2)],
      };
    }""")
    assert got["cells"] == [["0", "3", "3", "3"], ["—", "—", "—", "—"]], got["cells"]
    assert got["held"] == [2004, None]
    assert got["rates"] == [1.5, 0, 0]
    assert page.console_errors == []
