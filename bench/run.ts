import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { startEdge, startOrigin, type EdgeService, type Service } from '../scripts/stack';
import { heldOutPrompts } from '../test/support/prompts';
import { blockVerificationSuite } from './block-verification';
import { draftSpeed } from './draft-speed';
import { failoverSuite } from './failover';
import { jobsSuite } from './jobs';
import { prefixCacheSuite } from './prefix-cache';
import { startLatencyProxy, type LatencyProxy } from './latency-proxy';
import { renderSvg } from './plot';
import type { BenchRecord } from './records';
import { renderMarkdown, spliceBenchmarks } from './report';
import { sessionSuite, startEdgePair } from './session';
import { speculationSuite } from './speculation';

/**
 * `npm run bench [-- --quick]`: starts the local stack (a measured origin, a
 * GPU-cost-model origin, a latency-injecting proxy in front of them, and the
 * edge in workerd behind the proxy) and runs every suite, modes side by side
 * in one run. Writes bench/results/latest.{json,md,svg}, a timestamped copy of
 * the run, and the generated block of BENCHMARKS.md.
 *
 * Model folders: models/edgespec-{target,draft}, or EDGESPEC_TARGET_DIR / EDGESPEC_DRAFT_DIR.
 * Ports: 28787 (edge), 28788 (measured origin), 21791 (proxy), 21792
 * (GPU-cost-model origin), 21793-21795 (failover), 28789-28790 (the session
 * suite's own edges), 21796 (the capacity suite's batching origin); BENCH_PORT_BASE = B puts them on B, B + 1, ..., B + 9 instead (and the edge's local state in
 * .wrangler/bench-state-B), so two benchmark runs on one machine do not collide.
 * With --only, the other suites' records of the previous
 * bench/results/latest.json are kept (and labelled as such in the report).
 */
const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    /** Comma-separated suite names to run (default: all). */
    only: { type: 'string' },
  },
});
const quick = values.quick!;
const only = values.only ? new Set(values.only.split(',')) : null;
const started = Date.now();
const log = (line: string) => console.log(`[bench ${String(Math.round((Date.now() - started) / 1000)).padStart(4)} s] ${line}`);
const targetDir = process.env.EDGESPEC_TARGET_DIR ?? 'models/edgespec-target';
const draftDir = process.env.EDGESPEC_DRAFT_DIR ?? 'models/edgespec-draft';
const GPU_COST_MODEL = 'h100-llama-3.1-8b';
const RTTS = [0, 5, 20, 50, 100];
const portBase = process.env.BENCH_PORT_BASE ? Number(process.env.BENCH_PORT_BASE) : null;
if (portBase !== null && !(Number.isInteger(portBase) && portBase >= 1024 && portBase <= 65_526)) {
  throw new Error(`BENCH_PORT_BASE must be an integer port in 1024-65526 (the benchmarks use it up to + 9), got "${process.env.BENCH_PORT_BASE}"`);
}
/** The port at `offset` from BENCH_PORT_BASE, else the historical default. */
const port = (offset: number, fallback: number) => (portBase === null ? fallback : portBase + offset);

export interface BenchContext {
  /** The edge (test Worker): `url` + `apiKey` of a no-limits tenant for requests, the admin API for more tenants. */
  edge: EdgeService;
  /** The proxy in front of the origins: set `rttMs` and `upstream` per measurement. */
  proxy: LatencyProxy;
  origins: { measured: Service; gpuModel: Service };
  quick: boolean;
  /** The RTT sweep of a full run, ms. */
  rtts: number[];
  /** The GPU-cost-model origin's model (origins.gpuModel runs with `--cost-model` this). */
  gpuCostModel: string;
  log: (line: string) => void;
}

/** Every suite: a name and a function of the running stack. A new suite is one entry here. */
const suites: Array<{ name: string; run: (ctx: BenchContext) => Promise<BenchRecord[]> }> = [
  {
    name: 'draft-speed',
    run: (ctx) => draftSpeed({ draftDir, edge: ctx.edge, context: 128, steps: quick ? 16 : 64, repeats: quick ? 5 : 11, log: ctx.log }),
  },
  {
    name: 'speculation',
    async run(ctx) {
      const records: BenchRecord[] = [];
      const prompts = heldOutPrompts(quick ? 2 : 8, 400);
      for (const [cost, origin] of [['measured', ctx.origins.measured], [GPU_COST_MODEL, ctx.origins.gpuModel]] as const) {
        ctx.proxy.upstream = origin.url;
        for (const rtt of RTTS) {
          ctx.proxy.rttMs = rtt;
          ctx.log(`speculation: origin cost ${cost}, RTT ${rtt} ms, ${prompts.length} prompts × 4 modes`);
          records.push(...(await speculationSuite({ suite: 'speculation', edge: ctx.edge, prompts, maxTokens: quick ? 32 : 64, temperature: 0, rttMs: rtt, originCost: cost, log: ctx.log })));
        }
      }
      return records;
    },
  },
  {
    name: 'block-verification',
    async run(ctx) {
      ctx.proxy.upstream = ctx.origins.measured.url;
      ctx.proxy.rttMs = 0;
      ctx.log('block-verification: token-level vs block on the same prompts and seeds');
      return blockVerificationSuite({ edge: ctx.edge, prompts: heldOutPrompts(quick ? 6 : 30, 400), maxTokens: quick ? 24 : 48, temperature: 1, draftLength: 4, originCost: 'measured', log: ctx.log });
    },
  },
  {
    name: 'prefix-cache',
    run(ctx) {
      ctx.proxy.upstream = ctx.origins.measured.url;
      ctx.proxy.rttMs = 0;
      ctx.log('prefix-cache: TTFT cold vs warm for a prompt near the context length');
      return prefixCacheSuite({ edge: ctx.edge, draftDir, repeats: quick ? 3 : 8, maxTokens: 16, tailTokens: 24, log: ctx.log });
    },
  },
  { name: 'proposers', run: async (ctx) => (await import('./proposers')).proposersSuite(ctx) },
  // Edge vs origin-side drafting vs origin-only across the RTT sweep (bench/placement.ts).
  { name: 'placement', run: async (ctx) => (await import('./placement')).placementSuite(ctx) },
  {
    // Its own two origins and edge (bench/failover.ts): one origin is killed halfway.
    name: 'failover',
    run: (ctx) => failoverSuite({ targetDir, draftDir, quick: ctx.quick, log: ctx.log, portBase: port(4, 21793) }),
  },
  {
    // Verify rounds over HTTP vs one WebSocket session per generation (bench/session.ts): the main edge has the
    // default ORIGIN_SESSION (websocket), a second edge behind the same proxy verifies over HTTP.
    name: 'session',
    run: (ctx) =>
      sessionSuite({
        // Behind the proxy the main edge is the websocket one; straight to the origin (RTT 0) both are the suite's own.
        edgePair: (originUrl) => startEdgePair(originUrl, [port(8, 28790), port(7, 28789)], draftDir, ctx.log, originUrl === ctx.proxy.url ? ctx.edge : undefined),
        proxy: ctx.proxy,
        origin: ctx.origins.measured,
        targetDir,
        draftDir,
        quick: ctx.quick,
        log: ctx.log,
      }),
  },
  {
    // Multi-path drafts against single-path verification, in process, same prompts and seeds (bench/multipath.ts).
    name: 'multipath',
    run: async (ctx) => (await import('./multipath')).multipathSuite({ quick: ctx.quick, log: ctx.log }),
  },
  {
    // Capacity of one batching GPU-cost-model origin at 1-64 concurrent streams, origin-only vs edge drafting
    // (bench/capacity.ts): its own origin (--max-batch), streams driven from Node with the edge's loop.
    name: 'capacity',
    run: async (ctx) =>
      (await import('./capacity')).capacitySuite({ targetDir, draftDir, costModel: GPU_COST_MODEL, quick: ctx.quick, port: port(9, 21796), log: ctx.log }),
  },
  {
    // Background jobs with webhooks to a verifying receiver (bench/jobs.ts); small completions, so it takes minutes.
    name: 'jobs',
    run: (ctx) => jobsSuite(ctx, { jobs: quick ? 40 : 200, maxTokens: 32, timeoutMs: (quick ? 5 : 15) * 60_000 }),
  },
];

log(`${quick ? 'quick' : 'full'} run; models ${targetDir} + ${draftDir}`);
// Both origins host the draft too, so the placement suite can draft next to the target.
const measured = await startOrigin({ port: port(1, 28788), targetDir, id: 'origin-measured', originDraftDir: draftDir, log });
const gpuModel = await startOrigin({ port: port(3, 21792), targetDir, id: 'origin-gpu-model', originDraftDir: draftDir, args: ['--cost-model', GPU_COST_MODEL], log }).catch(async (err) => {
  await measured.stop();
  throw err;
});
const proxy = await startLatencyProxy({ port: port(2, 21791), upstream: measured.url });
let edge: EdgeService | undefined;
const records: BenchRecord[] = [];
try {
  // The test Worker (startEdge's default) has /internal/bench/draft and /internal/prefix-cache.
  edge = await startEdge({ port: port(0, 28787), originUrl: proxy.url, draftDir, persistTo: portBase === null ? '.wrangler/bench-state' : `.wrangler/bench-state-${portBase}`, log });
  const ctx: BenchContext = { edge, proxy, origins: { measured, gpuModel }, quick, rtts: RTTS, gpuCostModel: GPU_COST_MODEL, log };
  for (const suite of suites) {
    if (only && !only.has(suite.name)) continue;
    log(`suite ${suite.name}`);
    records.push(...(await suite.run(ctx)));
  }
} finally {
  await edge?.stop();
  await proxy.close();
  await gpuModel.stop();
  await measured.stop();
}

const command = `npm run bench${quick || only ? ' --' : ''}${quick ? ' --quick' : ''}${only ? ` --only ${values.only}` : ''}`;
const run = { date: new Date().toISOString(), quick, seconds: Math.round((Date.now() - started) / 1000), command, models: { target: targetDir, draft: draftDir }, records };
await mkdir('bench/results/runs', { recursive: true });
await writeFile(`bench/results/runs/${run.date.replaceAll(':', '-')}.json`, JSON.stringify(run, null, 2) + '\n');
// --only: latest.* keep the suites this run did not touch, from the previous latest (each record labelled with its run).
const latest = [...(only ? await carriedOver(new Set(records.map((r) => r.suite))) : []), ...records];
await writeFile('bench/results/latest.json', JSON.stringify(latest, null, 2) + '\n');
const markdown = renderMarkdown({ ...run, records: latest });
await writeFile('bench/results/latest.md', markdown);
await writeFile('bench/results/latest.svg', renderSvg(latest));
const benchmarks = await readFile('BENCHMARKS.md', 'utf8').catch(() => '# Benchmarks\n');
await writeFile('BENCHMARKS.md', spliceBenchmarks(benchmarks, markdown));
log(`done in ${run.seconds} s: bench/results/latest.{json,md,svg}, BENCHMARKS.md`);

/**
 * The previous bench/results/latest.json's records of suites not in `ran`,
 * each with `carried_from`: the run it was measured in (from the previous
 * latest.md's first line, unless the record already says so).
 */
async function carriedOver(ran: Set<string>): Promise<BenchRecord[]> {
  const previous = (JSON.parse(await readFile('bench/results/latest.json', 'utf8').catch(() => '[]')) as BenchRecord[]).filter((r) => !ran.has(r.suite));
  const header = /^Run (\S+) \(\d+ s\): `([^`]+)`/.exec((await readFile('bench/results/latest.md', 'utf8').catch(() => '')).split('\n')[0]);
  const from = header ? `run ${header[1]}, \`${header[2]}\`` : 'an earlier run';
  return previous.map((r) => ({ ...r, carried_from: r.carried_from ?? from }));
}
