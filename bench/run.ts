import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { startEdge, startOrigin, type EdgeService, type Service } from '../scripts/stack';
import { heldOutPrompts } from '../test/support/prompts';
import { blockVerificationSuite } from './block-verification';
import { draftSpeed } from './draft-speed';
import { failoverSuite } from './failover';
import { prefixCacheSuite } from './prefix-cache';
import { startLatencyProxy, type LatencyProxy } from './latency-proxy';
import { renderSvg } from './plot';
import type { BenchRecord } from './records';
import { renderMarkdown, spliceBenchmarks } from './report';
import { speculationSuite } from './speculation';

/**
 * `npm run bench [-- --quick]`: starts the local stack (a measured origin, a
 * GPU-cost-model origin, a latency-injecting proxy in front of them, and the
 * edge in workerd behind the proxy) and runs every suite, modes side by side
 * in one run. Writes bench/results/latest.{json,md,svg}, a timestamped copy of
 * the run, and the generated block of BENCHMARKS.md.
 *
 * Model folders: models/edgespec-{target,draft}, or EDGESPEC_TARGET_DIR / EDGESPEC_DRAFT_DIR.
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

export interface BenchContext {
  /** The edge (test Worker): `url` + `apiKey` of a no-limits tenant for requests, the admin API for more tenants. */
  edge: EdgeService;
  /** The proxy in front of the origins: set `rttMs` and `upstream` per measurement. */
  proxy: LatencyProxy;
  origins: { measured: Service; gpuModel: Service };
  quick: boolean;
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
  {
    // Its own two origins and edge (bench/failover.ts): one origin is killed halfway.
    name: 'failover',
    run: (ctx) => failoverSuite({ targetDir, draftDir, quick: ctx.quick, log: ctx.log }),
  },
];

log(`${quick ? 'quick' : 'full'} run; models ${targetDir} + ${draftDir}`);
const measured = await startOrigin({ port: 28788, targetDir, id: 'origin-measured', log });
const gpuModel = await startOrigin({ port: 21792, targetDir, id: 'origin-gpu-model', args: ['--cost-model', GPU_COST_MODEL], log }).catch(async (err) => {
  await measured.stop();
  throw err;
});
const proxy = await startLatencyProxy({ port: 21791, upstream: measured.url });
let edge: EdgeService | undefined;
const records: BenchRecord[] = [];
try {
  // The test Worker (startEdge's default) has /internal/bench/draft and /internal/prefix-cache.
  edge = await startEdge({ port: 28787, originUrl: proxy.url, draftDir, persistTo: '.wrangler/bench-state', log });
  const ctx: BenchContext = { edge, proxy, origins: { measured, gpuModel }, quick, log };
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
await writeFile('bench/results/latest.json', JSON.stringify(records, null, 2) + '\n');
await writeFile(`bench/results/runs/${run.date.replaceAll(':', '-')}.json`, JSON.stringify(run, null, 2) + '\n');
const markdown = renderMarkdown(run);
await writeFile('bench/results/latest.md', markdown);
await writeFile('bench/results/latest.svg', renderSvg(records));
const benchmarks = await readFile('BENCHMARKS.md', 'utf8').catch(() => '# Benchmarks\n');
await writeFile('BENCHMARKS.md', spliceBenchmarks(benchmarks, markdown));
log(`done in ${run.seconds} s: bench/results/latest.{json,md,svg}, BENCHMARKS.md`);
