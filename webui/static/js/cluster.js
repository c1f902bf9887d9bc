// Cluster facts read over REST: topics with their partitions (leader, replicas, ISR, offsets)
// and brokers. Pages that need the whole picture (overview counts, brokers, topics list) share
// one loader; it asks for at most TOPICS_DETAILED_MAX topics' partitions, FETCH_PARALLEL_MAX
// requests at a time.

import { get, v3 } from "./api.js";

export const TOPICS_DETAILED_MAX = 200;
const FETCH_PARALLEL_MAX = 6;

/** Run fn over items with at most `limit` promises in flight; results keep the order. */
export async function mapLimit(items, limit, fn) {
  const out = new Array(items.length);
  let next = 0;
  async function worker() {
    while (next < items.length) {
      const i = next++;
      try { out[i] = { ok: true, value: await fn(items[i]) }; } catch (e) { out[i] = { ok: false, error: e }; }
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/**
 * {topics: [{topic_name, partitions_count, replication_factor, partitions: [v3 partition] | null}],
 *  brokers: [{broker_id, host, port, alive}], truncated}
 */
export async function loadCluster({ withPartitions = true } = {}) {
  const [topics, brokers] = await Promise.all([get(await v3("/topics")), get(await v3("/brokers"))]);
  const list = topics.data.map((t) => ({ ...t, partitions: null }));
  if (withPartitions) {
    const detailed = list.slice(0, TOPICS_DETAILED_MAX);
    const base = await v3("/topics/");
    const parts = await mapLimit(detailed, FETCH_PARALLEL_MAX,
      (t) => get(`${base}${encodeURIComponent(t.topic_name)}/partitions`));
    parts.forEach((r, i) => { if (r.ok) detailed[i].partitions = r.value.data; });
  }
  return { topics: list, brokers: brokers.data, truncated: list.length > TOPICS_DETAILED_MAX };
}

/** Counts from loadCluster's answer, in the monitor's vocabulary. */
export function counts(c) {
  let partitions = 0, under = 0, offline = 0;
  for (const t of c.topics) {
    partitions += t.partitions_count;
    for (const p of t.partitions || []) {
      if (!p.leader) offline++;
      else if (p.under_replicated) under++;
    }
  }
  return { topics: c.topics.length, partitions, under_replicated: under, offline,
    brokers: c.brokers.length, brokers_alive: c.brokers.filter((b) => b.alive).length };
}

// A partition's offsets are -1 when the gateway did not hear from its leader (a broker
// restarting): unknown, not zero. Counted as zero, a topic's total dropped while its leader was
// silent, and the whole log counted as produced in one refresh when it answered again.

/** Records a partition holds: high watermark minus log start; null when its offsets are unknown. */
export function partitionRecords(p) {
  return p.high_watermark >= 0 && p.log_start_offset >= 0 ? p.high_watermark - p.log_start_offset : null;
}

/** Records the partitions hold, or null when any of them has unknown offsets (the others'
 * sum would be too low). */
export function recordsHeld(parts) {
  let total = 0;
  for (const p of parts) {
    const n = partitionRecords(p);
    if (n === null) return null;
    total += n;
  }
  return total;
}

/** {"topic/partition": high watermark} of every partition with known offsets, for records/s. */
export function highWatermarks(topics) {
  const out = {};
  for (const t of topics) {
    for (const p of t.partitions || []) if (p.high_watermark >= 0) out[`${t.topic_name}/${p.partition_id}`] = p.high_watermark;
  }
  return out;
}

/** Records/s between two highWatermarks() samples dtS seconds apart, over the partitions known
 * in both (a high watermark that went back -- a partition recreated -- counts 0). */
export function recordsPerSecond(before, after, dtS) {
  if (!(dtS > 0)) return 0;
  let records = 0;
  for (const [tp, hw] of Object.entries(after)) if (before[tp] !== undefined) records += Math.max(0, hw - before[tp]);
  return records / dtS;
}
