import { describe, expect, it } from 'vitest';
import { escapeLabelValue, Registry, type MetricsSnapshot } from '../../shared/metrics';
import { parseExposition, sampleValue } from './prometheus-text';

describe('shared/metrics: counters, gauges, histograms', () => {
  it('counts by label set and renders HELP, TYPE and one sample per series', () => {
    const r = new Registry();
    const requests = r.counter('app_requests_total', 'Requests.', ['route', 'status']);
    requests.inc({ route: 'a', status: '200' });
    requests.inc({ route: 'a', status: '200' }, 2);
    requests.inc({ status: '500', route: 'b' }); // label order does not matter
    expect(r.render()).toBe(
      ['# HELP app_requests_total Requests.', '# TYPE app_requests_total counter', 'app_requests_total{route="a",status="200"} 3', 'app_requests_total{route="b",status="500"} 1', ''].join('\n'),
    );
  });

  it('renders histograms as cumulative _bucket{le} lines with +Inf, _sum and _count; a value on a bound falls in that bucket', () => {
    const r = new Registry();
    const h = r.histogram('op_ms', 'Op time.', [1, 5, 10], ['op']);
    for (const v of [0.5, 1, 3, 10, 11, 100]) h.observe({ op: 'x' }, v);
    expect(r.render()).toBe(
      [
        '# HELP op_ms Op time.',
        '# TYPE op_ms histogram',
        'op_ms_bucket{op="x",le="1"} 2',
        'op_ms_bucket{op="x",le="5"} 3',
        'op_ms_bucket{op="x",le="10"} 4',
        'op_ms_bucket{op="x",le="+Inf"} 6',
        'op_ms_sum{op="x"} 125.5',
        'op_ms_count{op="x"} 6',
        '',
      ].join('\n'),
    );
  });

  it('shows an unlabelled metric as zero before its first event, without counting that as an event', () => {
    const r = new Registry();
    r.counter('c_total', 'C.');
    r.gauge('g', 'G.');
    r.histogram('h', 'H.', [1]);
    r.counter('labelled_total', 'L.', ['x']);
    const text = parseExposition(r.render());
    expect(sampleValue(text, 'c_total')).toBe(0);
    expect(text.samples.find((s) => s.name === 'h_bucket' && s.labels.le === '+Inf')?.value).toBe(0);
    expect(text.samples.some((s) => s.name === 'labelled_total')).toBe(false);
    expect(text.types.get('labelled_total')).toBe('counter');
    expect(r.isEmpty()).toBe(true);
    expect(r.snapshot()).toEqual({});
  });

  it('escapes label values (backslash, quote, line feed) and HELP text, and the text parses back to the same values', () => {
    const r = new Registry();
    const hostile = 'a\\b"c\nd} e="f",';
    r.counter('odd_total', 'Help with a \\ backslash\nand a line feed.', ['v']).inc({ v: hostile }, 4);
    r.gauge('temp', 'T.').set({}, -1.5);
    r.histogram('size', 'S.', [0.25, 2.5]).observe({}, 0.1);
    expect(escapeLabelValue(hostile)).toBe('a\\\\b\\"c\\nd} e=\\"f\\",');
    const text = r.render();
    expect(text.split('\n').filter(Boolean).every((line) => !line.includes('\r'))).toBe(true);
    const parsed = parseExposition(text);
    expect(parsed.help.get('odd_total')).toBe('Help with a \\ backslash\nand a line feed.');
    expect(sampleValue(parsed, 'odd_total', { v: hostile })).toBe(4);
    expect(sampleValue(parsed, 'temp')).toBe(-1.5);
    expect(sampleValue(parsed, 'size_bucket', { le: '0.25' })).toBe(1);
    expect(sampleValue(parsed, 'size_bucket', { le: '+Inf' })).toBe(1);
    expect(sampleValue(parsed, 'size_sum')).toBe(0.1);
    expect([...parsed.types]).toEqual([
      ['odd_total', 'counter'],
      ['temp', 'gauge'],
      ['size', 'histogram'],
    ]);
  });

  it('refuses what would render an invalid exposition or wrong numbers', () => {
    const r = new Registry();
    expect(() => r.counter('bad-name', 'x')).toThrow(/invalid metric name/);
    expect(() => r.counter('ok_total', 'x', ['bad-label'])).toThrow(/invalid label name/);
    expect(() => r.counter('ok_total', 'x', ['__reserved'])).toThrow(/invalid label name/);
    expect(() => r.histogram('h', 'x', [2, 1])).toThrow(/ascending/);
    expect(() => r.histogram('h', 'x', [])).toThrow(/ascending/);
    expect(() => r.histogram('h', 'x', [1], ['le'])).toThrow(/"le"/);
    const c = r.counter('c_total', 'x', ['a']);
    expect(() => c.inc({ a: 'x' }, -1)).toThrow(RangeError);
    expect(() => c.inc({ a: 'x' }, Infinity)).toThrow(RangeError);
    expect(() => c.inc({})).toThrow(/expected labels \{a\}/);
    expect(() => c.inc({ a: 'x', b: 'y' })).toThrow(/expected labels/);
    expect(() => r.histogram('h2', 'x', [1]).observe({}, NaN)).toThrow(RangeError);
    // Defining the same metric again is the same metric; defining it differently is a bug.
    r.counter('c_total', 'x', ['a']).inc({ a: 'x' });
    expect(sampleValue(parseExposition(r.render()), 'c_total', { a: 'x' })).toBe(1);
    expect(() => r.gauge('c_total', 'x', ['a'])).toThrow(/already defined differently/);
  });
});

describe('shared/metrics: snapshot and merge (per-isolate deltas)', () => {
  const define = (r = new Registry()) => ({
    r,
    requests: r.counter('req_total', 'Requests.', ['route']),
    depth: r.gauge('depth', 'Depth.'),
    ms: r.histogram('ms', 'Time.', [10, 100]),
  });

  it('adds deltas from several registries into totals that need no definitions of their own, through JSON', () => {
    const a = define();
    const b = define();
    a.requests.inc({ route: 'x' }, 2);
    a.ms.observe({}, 5);
    a.depth.set({}, 7);
    b.requests.inc({ route: 'x' });
    b.requests.inc({ route: 'y' }, 5);
    b.ms.observe({}, 50);
    b.ms.observe({}, 500);
    b.depth.set({}, 3);

    const totals = new Registry();
    for (const delta of [a.r.snapshot(), b.r.snapshot()]) totals.merge(JSON.parse(JSON.stringify(delta)) as MetricsSnapshot);
    const text = parseExposition(totals.render());
    expect(sampleValue(text, 'req_total', { route: 'x' })).toBe(3);
    expect(sampleValue(text, 'req_total', { route: 'y' })).toBe(5);
    expect(sampleValue(text, 'ms_bucket', { le: '10' })).toBe(1);
    expect(sampleValue(text, 'ms_bucket', { le: '100' })).toBe(2);
    expect(sampleValue(text, 'ms_bucket', { le: '+Inf' })).toBe(3);
    expect(sampleValue(text, 'ms_count')).toBe(3);
    expect(sampleValue(text, 'ms_sum')).toBe(555);
    // A gauge is a reading: the latest merged one wins.
    expect(sampleValue(text, 'depth')).toBe(3);
    expect(text.help.get('req_total')).toBe('Requests.');
    expect(text.types.get('ms')).toBe('histogram');
  });

  it('reset() empties the delta but keeps the definitions; a snapshot leaves out metrics that did not move', () => {
    const a = define();
    a.requests.inc({ route: 'x' });
    expect(Object.keys(a.r.snapshot())).toEqual(['req_total']);
    a.r.reset();
    expect(a.r.isEmpty()).toBe(true);
    expect(a.r.snapshot()).toEqual({});
    a.requests.inc({ route: 'z' });
    expect(a.r.snapshot().req_total.series).toEqual([{ labels: { route: 'z' }, value: 1 }]);
  });

  it('a snapshot is a copy: counting on afterwards does not change it', () => {
    const a = define();
    a.ms.observe({}, 1);
    const snap = a.r.snapshot();
    a.ms.observe({}, 1);
    expect(snap.ms).toMatchObject({ series: [{ count: 1, counts: [1, 0, 0] }] });
  });

  it('merging back into the registry a delta came from (a failed flush) adds it to what was counted since', () => {
    const a = define();
    a.requests.inc({ route: 'x' }, 2);
    const delta = a.r.snapshot();
    a.r.reset();
    a.requests.inc({ route: 'x' });
    a.r.merge(delta);
    expect(a.r.snapshot().req_total.series).toEqual([{ labels: { route: 'x' }, value: 3 }]);
  });

  it('a metric whose definition changed (new buckets) starts over from the incoming data', () => {
    const totals = new Registry();
    const old = new Registry();
    old.histogram('ms', 'Time.', [10]).observe({}, 5);
    totals.merge(old.snapshot());
    const changed = new Registry();
    changed.histogram('ms', 'Time.', [10, 20]).observe({}, 15);
    totals.merge(changed.snapshot());
    const text = parseExposition(totals.render());
    expect(sampleValue(text, 'ms_count')).toBe(1);
    expect(sampleValue(text, 'ms_bucket', { le: '20' })).toBe(1);
  });
});
