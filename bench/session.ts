import { parseArgs } from 'node:util';
import { DraftModelProposer } from '../functions/proposers/draft-model';
import { LinkEstimator } from '../functions/speculation/controller';
import { decode, type GenerationInput, type SpeculationPlan } from '../functions/speculation/loop';
import { GenerationRecord } from '../functions/speculation/record';
import { newStats } from '../functions/speculation/stats';
import { HttpOriginClient } from '../functions/upstream/client';
import { OriginPool } from '../functions/upstream/pool';
import { SessionOriginClient } from '../functions/upstream/session';
import { startEdge, startOrigin, type EdgeService, type Service } from '../scripts/stack';
import { loadFolderTokenizer, loadNodeModel } from '../test/support/models';
import { heldOutPrompts } from '../test/support/prompts';
import { startLatencyProxy, type LatencyProxy } from './latency-proxy';
import { interleaved, median, round } from './measure';
import type { BenchRecord } from './records';
import { postJson, sseData, type EdgeTarget } from './sse';

/**
 * The session protocol against HTTP, per verify round (README: Origin
 * sessions): the same prompts, greedy lockstep k = 4 with the draft model,
 * interleaved prompt by prompt, over HTTP (a signed POST /v1/verify carrying
 * the whole context each round) and over one WebSocket session per
 * generation. The number that matters is the per-round overhead: the mean
 * over verify rounds of (verify wall time − the origin's forward_ms − its
 * queue_ms), i.e. what the transport costs the edge per round beyond the
 * target's work, RTT included. Measured twice:
 *
 *   - workerd: the real edge (`wrangler dev`), one with ORIGIN_SESSION
 *     "websocket" and one with "http", both behind the latency proxy;
 *   - Node: the speculation loop in process (the draft on onnxruntime-node),
 *     HttpOriginClient vs SessionOriginClient, straight to the origin at RTT 0
 *     and through the proxy.
 *
 * `npm run bench -- --only session`, or on its own (its own origin, proxy and
 * edges; prints the records): `npx tsx bench/session.ts [--quick] [--port-base 21801]`
 * (through npx for the Node 22 of node_modules: the Node half needs its global WebSocket).
 */
export interface EdgePair {
  /** ORIGIN_SESSION "websocket" (the default) and "http", same draft, same origin URL. */
  websocket: EdgeTarget;
  http: EdgeTarget;
  stop(): Promise<void>;
}

export interface SessionBenchOptions {
  /** Two edges whose ORIGIN_URL is `originUrl`: straight to the origin (RTT 0) or the proxy (the RTT sweep). */
  edgePair(originUrl: string): Promise<EdgePair>;
  proxy: LatencyProxy;
  /** The measured origin (its CPU cost), which the proxy forwards to. */
  origin: Service;
  targetDir: string;
  draftDir: string;
  quick: boolean;
  rtts?: number[];
  log: (line: string) => void;
}

const K = 4;
const TRANSPORTS = ['http', 'websocket'] as const;
type Transport = (typeof TRANSPORTS)[number];

/** One generation's totals, whichever runtime ran it. */
interface RoundTotals {
  /** The token ids (Node runs; the workerd ones are checked by the greedy-identity tests) and how many. */
  tokens: number[];
  tokenCount: number;
  wallMs: number;
  ttftMs: number;
  rounds: number;
  verifyMs: number;
  forwardMs: number;
  queueMs: number;
  draftMs: number;
  drafted: number;
  transport: string;
  fallbacks: number;
  /** Per verify round: its wall time minus the origin's forward_ms (queue_ms, ~0 with one client, is only in the totals). */
  roundOverheads: number[];
}

export async function sessionSuite(options: SessionBenchOptions): Promise<BenchRecord[]> {
  const { log, proxy } = options;
  const prompts = heldOutPrompts(options.quick ? 2 : 6, 400);
  const maxTokens = options.quick ? 32 : 64;
  const rtts = options.rtts ?? [0, 20];
  const records: BenchRecord[] = [];
  proxy.upstream = options.origin.url;

  // workerd: the same request to the edge of each transport.
  let edges!: EdgePair;
  // The record gives each round's verify and forward ms, for the median.
  const body = (prompt: string) => ({ prompt, max_tokens: maxTokens, temperature: 0, stream: true, speculation: { mode: 'lockstep', draft_length: K, proposer: 'draft-model', record: true } });
  const viaEdge = async (transport: Transport, prompt: string): Promise<RoundTotals> => {
    const started = performance.now();
    const response = await postJson(edges[transport], '/v1/completions', body(prompt));
    if (!response.ok || !response.body) throw new Error(`completion failed: ${response.status} ${await response.text()}`);
    let ttftMs = 0;
    let last: any = null;
    const roundOverheads: number[] = [];
    for await (const data of sseData(response.body)) {
      if (data === '[DONE]') continue;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(`stream error: ${chunk.error.message}`);
      if (!ttftMs && chunk.choices?.[0]?.text) ttftMs = performance.now() - started;
      for (const r of chunk.speculation_record?.rounds ?? []) if (r.kind === 'verify') roundOverheads.push(r.verify_ms - r.forward_ms);
      last = chunk;
    }
    return { ...edgeTotals(last.speculation), tokens: [], tokenCount: last.usage.completion_tokens, wallMs: performance.now() - started, ttftMs, roundOverheads };
  };
  const workerdRuns = async (rtt: number, path: 'direct' | 'proxy') => {
    proxy.rttMs = rtt;
    log(`session: workerd, RTT ${rtt} ms (${path}), ${prompts.length} prompts × ${TRANSPORTS.length} transports`);
    for (const t of TRANSPORTS) await viaEdge(t, prompts[0]);
    const runs = await interleaved(TRANSPORTS.map((mode) => ({ mode })), prompts.length, (m, i) => viaEdge(m.mode, prompts[i]));
    records.push(...summarise(runs, { runtime: 'workerd', rtt, path, log }));
  };
  for (const path of ['direct', 'proxy'] as const) {
    edges = await options.edgePair(path === 'direct' ? options.origin.url : proxy.url);
    try {
      for (const rtt of path === 'direct' ? [0] : rtts) await workerdRuns(rtt, path);
    } finally {
      await edges.stop();
    }
  }

  // Node: the loop in process, the draft on onnxruntime-node.
  if (typeof WebSocket !== 'function') throw new Error('the Node part of the session benchmark needs a global WebSocket (Node >= 22: run it through npm run bench)');
  const [draft, tokenizer] = await Promise.all([loadNodeModel(options.draftDir, 'quantized'), loadFolderTokenizer(options.targetDir)]);
  const vocabSize = draft.config.vocabSize;
  const tokenPrompts = prompts.map((p) => tokenizer.encode(p));
  const plan: SpeculationPlan = { mode: 'lockstep', method: 'token', draftLength: K, depth: 1, minConfidence: 0 };
  const viaNode = async (transport: Transport, prompt: number[], url: string): Promise<RoundTotals> => {
    const http = new HttpOriginClient(url, 30_000, { name: 'bench-origin', vocabSize });
    const pool = new OriginPool([{ id: 'bench-origin', url, kind: 'reference', weight: 1, client: http }]);
    const session = pool.session(null);
    const stats = newStats('lockstep', K, 'token');
    const client = new SessionOriginClient(session, transport === 'websocket' ? session.sessionRoute() : null, { timeoutMs: 30_000, vocabSize }, stats);
    const record = new GenerationRecord(false, () => false);
    const input: GenerationInput = { prompt, maxTokens, sampling: { temperature: 0, top_p: 1, top_k: 0, seed: 0 }, stopTokenIds: new Set(), maxPositions: draft.config.maxPositions, record };
    const started = performance.now();
    let ttftMs = 0;
    const tokens: number[] = [];
    try {
      for await (const piece of decode(input, plan, () => new DraftModelProposer(draft.lm, 32), client, stats, undefined, new LinkEstimator())) {
        ttftMs ||= performance.now() - started;
        tokens.push(...piece);
      }
    } finally {
      client.close();
    }
    return { tokens, tokenCount: tokens.length, wallMs: performance.now() - started, ttftMs, rounds: stats.rounds, verifyMs: stats.verifyMs, forwardMs: stats.originForwardMs, queueMs: stats.originQueueMs, draftMs: stats.draftMs, drafted: stats.drafted, transport: stats.transport, fallbacks: stats.sessionFallbacks, roundOverheads: record.rounds.filter((r) => r.kind === 'verify').map((r) => r.verify_ms - r.forward_ms) };
  };
  const paths: Array<{ rtt: number; path: 'direct' | 'proxy'; url: string }> = [{ rtt: 0, path: 'direct', url: options.origin.url }, ...rtts.map((rtt) => ({ rtt, path: 'proxy' as const, url: proxy.url }))];
  for (const { rtt, path, url } of paths) {
    proxy.rttMs = rtt;
    log(`session: Node, RTT ${rtt} ms (${path}), ${prompts.length} prompts × ${TRANSPORTS.length} transports`);
    for (const t of TRANSPORTS) await viaNode(t, tokenPrompts[0], url);
    const runs = await interleaved(TRANSPORTS.map((mode) => ({ mode })), prompts.length, (m, i) => viaNode(m.mode, tokenPrompts[i], url));
    // Greedy: both transports must have produced the same tokens, prompt by prompt.
    runs.get('http')!.forEach((r, i) => {
      if (JSON.stringify(r.tokens) !== JSON.stringify(runs.get('websocket')![i].tokens)) throw new Error(`prompt ${i}: the session's tokens differ from HTTP's`);
    });
    records.push(...summarise(runs, { runtime: 'Node', rtt, path, log }));
  }
  proxy.rttMs = 0;
  return records;
}

const quantile = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * q))];

/** A websocket and an http edge (the test Worker) in front of `originUrl`, started side by side. */
export async function startEdgePair(originUrl: string, ports: [number, number], draftDir: string, log: (line: string) => void, websocket?: EdgeService): Promise<EdgePair> {
  const start = (port: number, session: Transport) => startEdge({ port, originUrl, draftDir, persistTo: `.wrangler/bench-session-${port}`, vars: { ORIGIN_SESSION: session }, log });
  const [ws, http] = await Promise.all([websocket ?? start(ports[0], 'websocket'), start(ports[1], 'http')]);
  return {
    websocket: ws,
    http,
    async stop() {
      // An edge handed in belongs to the caller.
      await Promise.all([websocket ? null : ws.stop(), http.stop()]);
    },
  };
}

/** The response's `speculation` object as round totals. */
function edgeTotals(s: any): Omit<RoundTotals, 'tokens' | 'tokenCount' | 'wallMs' | 'ttftMs' | 'roundOverheads'> {
  return { rounds: s.rounds, verifyMs: s.verify_ms, forwardMs: s.origin_forward_ms, queueMs: s.origin_queue_ms ?? 0, draftMs: s.draft_ms, drafted: s.drafted, transport: s.transport ?? 'http', fallbacks: s.session_fallbacks ?? 0 };
}

function summarise(runs: Map<string, RoundTotals[]>, where: { runtime: string; rtt: number; path: string; log: (line: string) => void }): BenchRecord[] {
  const records: BenchRecord[] = [];
  for (const transport of TRANSPORTS) {
    const r = runs.get(transport)!;
    const sum = (f: (x: RoundTotals) => number) => r.reduce((a, x) => a + f(x), 0);
    const rounds = sum((x) => x.rounds);
    const tokens = sum((x) => x.tokenCount);
    const forwardPerRound = sum((x) => x.forwardMs) / rounds;
    const draftPerToken = sum((x) => x.draftMs) / sum((x) => x.drafted);
    const served = [...new Set(r.map((x) => x.transport))].join(',');
    if (served !== transport) throw new Error(`${where.runtime} ${transport}: the generations report transport "${served}" (${sum((x) => x.fallbacks)} fallbacks)`);
    const record: BenchRecord = {
      suite: 'session',
      mode: `${where.runtime} ${transport}`,
      rtt_ms: where.rtt,
      origin_cost: 'measured',
      path: where.path,
      tokens_per_s: round((tokens / sum((x) => x.wallMs)) * 1000),
      ttft_ms: round(median(r.map((x) => x.ttftMs))),
      target_passes_per_token: round(rounds / tokens),
      mean_accepted: round(tokens / rounds),
      draft_ms_per_token: round(draftPerToken),
      per_round_overhead_ms: round((sum((x) => x.verifyMs) - sum((x) => x.forwardMs) - sum((x) => x.queueMs)) / rounds),
      per_round_overhead_median_ms: round(median(r.flatMap((x) => x.roundOverheads))),
      per_round_overhead_p90_ms: round(quantile(r.flatMap((x) => x.roundOverheads), 0.9)),
      verify_ms_per_round: round(sum((x) => x.verifyMs) / rounds),
      forward_ms_per_round: round(forwardPerRound),
      queue_ms_per_round: round(sum((x) => x.queueMs) / rounds),
      // c: a draft step over a target verify pass, as this run measured them.
      draft_target_cost_ratio: round(draftPerToken / forwardPerRound),
      rounds,
      tokens,
      prompts: r.length,
    };
    where.log(
      `  ${record.mode} RTT ${where.rtt} ms (${where.path}): overhead ${record.per_round_overhead_ms} ms/round (verify ${record.verify_ms_per_round} − forward ${record.forward_ms_per_round} − queue ${record.queue_ms_per_round}; ` +
        `median ${record.per_round_overhead_median_ms}, p90 ${record.per_round_overhead_p90_ms}), ` +
        `${record.tokens_per_s} tok/s, c ${record.draft_target_cost_ratio}`,
    );
    records.push(record);
  }
  return records;
}

// Standalone: `tsx bench/session.ts [--quick] [--port-base N]`: origin on N, proxy N + 1, edges N + 2 (websocket) and N + 3 (http).
if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({ options: { quick: { type: 'boolean', default: false }, 'port-base': { type: 'string', default: '21801' } } });
  const base = Number(values['port-base']);
  const targetDir = process.env.EDGESPEC_TARGET_DIR ?? 'models/edgespec-target';
  const draftDir = process.env.EDGESPEC_DRAFT_DIR ?? 'models/edgespec-draft';
  const log = (line: string) => console.log(`[bench] ${line}`);
  const origin = await startOrigin({ port: base, targetDir, id: 'origin-measured', log });
  const proxy = await startLatencyProxy({ port: base + 1, upstream: origin.url });
  try {
    const records = await sessionSuite({ edgePair: (originUrl) => startEdgePair(originUrl, [base + 2, base + 3], draftDir, log), proxy, origin, targetDir, draftDir, quick: values.quick!, log });
    console.log(JSON.stringify(records, null, 2));
  } finally {
    await proxy.close();
    await origin.stop();
  }
}
