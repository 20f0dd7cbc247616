/**
 * A tiny metrics registry for both sides (the edge Worker in workerd, the
 * reference origin in Node): counters, gauges and fixed-bucket histograms
 * with label sets, rendered in the Prometheus text exposition format 0.0.4.
 * No dependencies, no clock, no timers.
 *
 * `snapshot()` is plain JSON and `merge()` adds one into a registry, so a
 * Worker isolate can ship what it counted since its last flush (a delta) to
 * one place that adds every isolate's deltas up (functions/metrics): a
 * snapshot carries each metric's type, help and buckets, so the receiving
 * registry needs no definitions of its own.
 *
 * Merging: counters and histograms add; a gauge takes the incoming value
 * (a gauge is a reading, not a sum). A metric whose definition changed
 * (type, label names or buckets, e.g. after a deployment changed buckets)
 * starts over from the incoming data instead of adding incompatible numbers.
 */
export type Labels = Readonly<Record<string, string>>;
export type MetricType = 'counter' | 'gauge' | 'histogram';

export interface ValueSeries {
  labels: Record<string, string>;
  value: number;
}

export interface HistogramSeries {
  labels: Record<string, string>;
  /** Observations per bucket, not cumulative: one entry per upper bound, then one for +Inf. */
  counts: number[];
  sum: number;
  count: number;
}

export type MetricSnapshot =
  | { type: 'counter' | 'gauge'; help: string; labelNames: string[]; series: ValueSeries[] }
  | { type: 'histogram'; help: string; labelNames: string[]; buckets: number[]; series: HistogramSeries[] };

/** Metric name → its definition and series; JSON-safe (values are finite; the +Inf bucket is implied). */
export type MetricsSnapshot = Record<string, MetricSnapshot>;

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

interface Metric {
  type: MetricType;
  help: string;
  labelNames: readonly string[];
  buckets?: readonly number[];
  /** Series by their label values (joined in `labelNames` order). */
  series: Map<string, ValueSeries | HistogramSeries>;
}

export class Counter {
  constructor(private readonly metric: Metric) {}

  inc(labels: Labels = {}, by = 1): void {
    if (!(finite(by) >= 0)) throw new RangeError(`a counter only goes up, got ${by}`);
    (seriesOf(this.metric, labels) as ValueSeries).value += by;
  }
}

export class Gauge {
  constructor(private readonly metric: Metric) {}

  set(labels: Labels, value: number): void {
    (seriesOf(this.metric, labels) as ValueSeries).value = finite(value);
  }

  inc(labels: Labels = {}, by = 1): void {
    (seriesOf(this.metric, labels) as ValueSeries).value += finite(by);
  }
}

export class Histogram {
  constructor(private readonly metric: Metric) {}

  observe(labels: Labels, value: number): void {
    finite(value);
    const series = seriesOf(this.metric, labels) as HistogramSeries;
    const buckets = this.metric.buckets!;
    let i = 0;
    while (i < buckets.length && value > buckets[i]) i++;
    series.counts[i]++;
    series.sum += value;
    series.count++;
  }
}

export class Registry {
  private readonly metrics = new Map<string, Metric>();

  counter(name: string, help: string, labelNames: readonly string[] = []): Counter {
    return new Counter(this.define(name, 'counter', help, labelNames));
  }

  gauge(name: string, help: string, labelNames: readonly string[] = []): Gauge {
    return new Gauge(this.define(name, 'gauge', help, labelNames));
  }

  /** `buckets`: the upper bounds, ascending; +Inf is always added. */
  histogram(name: string, help: string, buckets: readonly number[], labelNames: readonly string[] = []): Histogram {
    return new Histogram(this.define(name, 'histogram', help, labelNames, buckets));
  }

  /** Defining the same metric again returns it (modules may load twice); a different definition is a bug. */
  private define(name: string, type: MetricType, help: string, labelNames: readonly string[], buckets?: readonly number[]): Metric {
    if (!METRIC_NAME.test(name)) throw new RangeError(`invalid metric name "${name}"`);
    const bad = labelNames.find((l) => !LABEL_NAME.test(l) || l.startsWith('__'));
    if (bad !== undefined) throw new RangeError(`metric ${name}: invalid label name "${bad}"`);
    if (type === 'histogram') {
      if (!buckets?.length || buckets.some((b, i) => !Number.isFinite(b) || (i > 0 && b <= buckets[i - 1]))) {
        throw new RangeError(`histogram ${name}: buckets must be finite and strictly ascending, got [${buckets?.join(', ')}]`);
      }
      if (labelNames.includes('le')) throw new RangeError(`histogram ${name}: "le" is the bucket label and cannot be one of its own`);
    }
    const existing = this.metrics.get(name);
    if (existing) {
      if (!sameDefinition(existing, { type, labelNames, buckets })) throw new Error(`metric ${name} is already defined differently`);
      return existing;
    }
    const metric: Metric = { type, help, labelNames: [...labelNames], buckets: buckets && [...buckets], series: new Map() };
    this.metrics.set(name, metric);
    return metric;
  }

  /** Every series, as JSON; metrics with none are left out (a delta carries only what moved). */
  snapshot(): MetricsSnapshot {
    const out: MetricsSnapshot = {};
    for (const [name, m] of this.metrics) {
      if (!m.series.size) continue;
      const series = [...m.series.values()].map((s) => structuredClone(s));
      out[name] =
        m.type === 'histogram'
          ? { type: 'histogram', help: m.help, labelNames: [...m.labelNames], buckets: [...m.buckets!], series: series as HistogramSeries[] }
          : { type: m.type, help: m.help, labelNames: [...m.labelNames], series: series as ValueSeries[] };
    }
    return out;
  }

  /** True when nothing was counted since the last `reset()`. */
  isEmpty(): boolean {
    for (const m of this.metrics.values()) if (m.series.size) return false;
    return true;
  }

  /** Drops every series, keeping the definitions (what an isolate does after shipping its delta). */
  reset(): void {
    for (const m of this.metrics.values()) m.series.clear();
  }

  /** Adds a snapshot in (see the header for gauges and changed definitions); unknown metrics are defined from it. */
  merge(snapshot: MetricsSnapshot): void {
    for (const [name, incoming] of Object.entries(snapshot)) {
      const buckets = incoming.type === 'histogram' ? incoming.buckets : undefined;
      let metric = this.metrics.get(name);
      if (metric && !sameDefinition(metric, { type: incoming.type, labelNames: incoming.labelNames, buckets })) {
        this.metrics.delete(name);
        metric = undefined;
      }
      metric ??= this.define(name, incoming.type, incoming.help, incoming.labelNames, buckets);
      for (const s of incoming.series) {
        const target = seriesOf(metric, s.labels);
        if (metric.type === 'histogram') {
          const from = s as HistogramSeries;
          const to = target as HistogramSeries;
          from.counts.forEach((n, i) => (to.counts[i] += n));
          to.sum += from.sum;
          to.count += from.count;
        } else if (metric.type === 'counter') (target as ValueSeries).value += (s as ValueSeries).value;
        else (target as ValueSeries).value = (s as ValueSeries).value;
      }
    }
  }

  /**
   * The Prometheus text format 0.0.4 (Content-Type `text/plain; version=0.0.4`):
   * HELP and TYPE lines for every defined metric, a sample per series; an
   * unlabelled metric with no series yet reads 0.
   */
  render(): string {
    const lines: string[] = [];
    for (const [name, m] of this.metrics) {
      lines.push(`# HELP ${name} ${escapeHelp(m.help)}`, `# TYPE ${name} ${m.type}`);
      // An unlabelled metric reads zero before its first event (without creating a series: a delta stays empty).
      const series = m.series.size || m.labelNames.length ? [...m.series.values()] : [emptySeries(m, {})];
      for (const s of series) {
        if (m.type !== 'histogram') {
          lines.push(`${name}${labelText(s.labels)} ${(s as ValueSeries).value}`);
          continue;
        }
        const h = s as HistogramSeries;
        let cumulative = 0;
        m.buckets!.forEach((bound, i) => {
          cumulative += h.counts[i];
          lines.push(`${name}_bucket${labelText({ ...h.labels, le: String(bound) })} ${cumulative}`);
        });
        lines.push(`${name}_bucket${labelText({ ...h.labels, le: '+Inf' })} ${h.count}`);
        lines.push(`${name}_sum${labelText(h.labels)} ${h.sum}`);
        lines.push(`${name}_count${labelText(h.labels)} ${h.count}`);
      }
    }
    return lines.length ? `${lines.join('\n')}\n` : '';
  }
}

export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** Every value is finite: a snapshot is JSON, where NaN and Infinity do not survive. */
function finite(value: number): number {
  if (!Number.isFinite(value)) throw new RangeError(`metric values must be finite, got ${value}`);
  return value;
}

function sameDefinition(m: Pick<Metric, 'type' | 'labelNames' | 'buckets'>, d: Pick<Metric, 'type' | 'labelNames' | 'buckets'>): boolean {
  const same = (a: readonly unknown[] = [], b: readonly unknown[] = []) => a.length === b.length && a.every((x, i) => x === b[i]);
  return m.type === d.type && same(m.labelNames, d.labelNames) && same(m.buckets, d.buckets);
}

/** The series of these label values, created at zero. Every declared label is required, and no other. */
function seriesOf(metric: Metric, labels: Labels): ValueSeries | HistogramSeries {
  const names = metric.labelNames;
  const given = Object.keys(labels);
  if (given.length !== names.length || names.some((n) => typeof labels[n] !== 'string')) {
    throw new RangeError(`expected labels {${names.join(', ')}}, got {${given.join(', ')}}`);
  }
  const key = names.map((n) => labels[n]).join('\u0000');
  let series = metric.series.get(key);
  if (!series) {
    series = emptySeries(metric, Object.fromEntries(names.map((n) => [n, labels[n]])));
    metric.series.set(key, series);
  }
  return series;
}

function emptySeries(metric: Metric, labels: Record<string, string>): ValueSeries | HistogramSeries {
  return metric.type === 'histogram' ? { labels, counts: new Array(metric.buckets!.length + 1).fill(0), sum: 0, count: 0 } : { labels, value: 0 };
}

function labelText(labels: Record<string, string>): string {
  const entries = Object.entries(labels);
  return entries.length ? `{${entries.map(([k, v]) => `${k}="${escapeLabelValue(v)}"`).join(',')}}` : '';
}

/** Label values escape backslash, double quote and line feed (text format 0.0.4). */
export function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** HELP text escapes backslash and line feed only. */
function escapeHelp(help: string): string {
  return help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}
