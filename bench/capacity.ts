import { DRAFT_MODEL, DraftModelProposer } from '../functions/proposers/draft-model';
import type { Proposer, ProposeOptions } from '../functions/proposers/types';
import type { DraftToken } from '../shared/sampling';
import type { WireSampling } from '../shared/protocol';
import { LinkEstimator } from '../functions/speculation/controller';
import { decode, type GenerationInput, type SpeculationPlan } from '../functions/speculation/loop';
import { newStats } from '../functions/speculation/stats';
import { HttpOriginClient } from '../functions/upstream/client';
import { startOrigin, type Service } from '../scripts/stack';
import { parseExposition, sampleValue } from '../test/metrics/prometheus-text';
import { loadFolderTokenizer, loadNodeModel } from '../test/support/models';
import { heldOutPrompts } from '../test/support/prompts';
import { round } from './measure';
import type { BenchRecord } from './records';

/**
 * Capacity (BENCHMARKS.md: Capacity): how many tokens one batching origin
 * serves per modelled GPU-second, with and without edge drafting, at 1, 4,
 * 16 and 64 concurrent streams (quick: 1, 4, 16). The anchor is SLED
 * (Li et al. 2025): edge drafting with server-side batched verification,
 * 2.2x server throughput.
 *
 * The origin is origin/main.ts with the GPU cost model and continuous
 * batching (`--max-batch 64`): every pass, batched or not, is held to the
 * roofline duration of its rows (origin/cost-model.ts), and /metrics sums
 * those durations (`edgespec_origin_modelled_forward_ms`) and counts passes
 * and rows (`edgespec_origin_batch_size`). The streams are driven from Node
 * with the edge's own loop (functions/speculation/loop.ts) over
 * HttpOriginClient, the draft on onnxruntime-node (as bench/session.ts's
 * "Node" rows), not through workerd: 64 streams of WASM drafting in one local
 * isolate on a 2-core machine would measure that isolate, while each edge
 * location drafts for its own users. Greedy, `proposer` draft model only.
 *
 * Modes, per concurrency level, side by side in one run (the order rotates
 * every level): origin-only (`speculation: { draft_length: 0 }`: one target
 * pass per token, all streams' steps batched), and edge drafting
 * (`{ placement: "edge", mode: "lockstep", draft_length: 4 }`) twice:
 *   - "drafts live": every stream's draft steps run here, all streams on the
 *     one onnxruntime-node session of this process, so at 16+ streams they
 *     queue behind each other on one core (a bound of this machine, not of the
 *     design: deployed, each edge location drafts for its own streams);
 *   - "drafts replayed": each stream's proposals were recorded running it
 *     alone (the same draft model, the same contexts: greedy makes them
 *     deterministic) and are replayed with the time they took alone, as if
 *     every stream had its own edge CPU. The origin still verifies every
 *     round for real; a context not recorded (it cannot happen unless the
 *     target's tokens changed) is drafted live and counted (`replay_misses`).
 * Every stream of a cell starts at once; time per output token of a stream =
 * (end − first token) / (tokens − 1).
 */
export interface CapacityOptions {
  targetDir: string;
  draftDir: string;
  costModel: string;
  quick: boolean;
  port: number;
  log: (line: string) => void;
}

const K = 4;
/**
 * The origin's batching policies, each a run of every level and mode on a fresh origin: no wait (after a
 * pass, a few event-loop turns for its callers to come back, then whatever is waiting), and waits of up to
 * 4 and 8 ms for them (`--batch-wait-ms`): an edge's rows come back after drafting (k draft steps and the
 * link), so without a wait its streams split into small passes; the wait trades latency for fuller passes.
 */
const BATCH_WAITS_MS = [0, 4, 8];
type Drafts = 'live' | 'replayed' | null;
const EDGE_PLAN: SpeculationPlan = { mode: 'lockstep', method: 'token', draftLength: K, depth: 1, minConfidence: 0, placement: 'edge' };
const MODES: Array<{ mode: string; plan: SpeculationPlan; drafts: Drafts }> = [
  { mode: 'origin-only', plan: { mode: 'lockstep', method: 'token', draftLength: 0, depth: 1, minConfidence: 0 }, drafts: null },
  { mode: `edge lockstep k=${K}, drafts replayed`, plan: EDGE_PLAN, drafts: 'replayed' },
  { mode: `edge lockstep k=${K}, drafts live`, plan: EDGE_PLAN, drafts: 'live' },
];

/** Proposals by (budget, context): what the draft model proposed there, and how long it took running alone. */
type DraftMemo = Map<string, { drafts: DraftToken[]; ms: number }>;
const memoKey = (context: readonly number[], maxTokens: number) => `${maxTokens}|${context.join(',')}`;

/** The draft model, each proposal written down with its time (the recording run: one stream at a time). */
class RecordingDraft implements Proposer {
  readonly name = DRAFT_MODEL;
  constructor(
    private readonly inner: Proposer,
    private readonly memo: DraftMemo,
  ) {}

  async propose(context: readonly number[], maxTokens: number, sampling: WireSampling, options?: ProposeOptions): Promise<DraftToken[]> {
    const started = performance.now();
    const drafts = await this.inner.propose(context, maxTokens, sampling, options);
    this.memo.set(memoKey(context, maxTokens), { drafts, ms: performance.now() - started });
    return drafts;
  }
}

/** The recorded proposals, each after its recorded time; live drafting for a context never recorded. */
class ReplayedDraft implements Proposer {
  readonly name = DRAFT_MODEL;
  private live: Proposer | null = null;
  constructor(
    private readonly memo: DraftMemo,
    private readonly liveDraft: () => Proposer,
    private readonly onMiss: () => void,
  ) {}

  async propose(context: readonly number[], maxTokens: number, sampling: WireSampling, options?: ProposeOptions): Promise<DraftToken[]> {
    const hit = this.memo.get(memoKey(context, maxTokens));
    if (hit) {
      await new Promise((resolve) => setTimeout(resolve, hit.ms));
      return hit.drafts;
    }
    this.onMiss();
    this.live ??= this.liveDraft();
    return this.live.propose(context, maxTokens, sampling, options);
  }
}

interface StreamRun {
  tokens: number[];
  ttftMs: number;
  tpotMs: number;
  drafted: number;
  accepted: number;
  draftMs: number;
  rounds: number;
}

interface OriginCounters {
  modelledMs: number;
  passes: number;
  rows: number;
  overruns: number;
}

export async function capacitySuite(options: CapacityOptions): Promise<BenchRecord[]> {
  const { log, quick } = options;
  const streamCounts = quick ? [1, 4, 16] : [1, 4, 16, 64];
  const maxTokens = quick ? 48 : 96;
  const maxStreams = Math.max(...streamCounts);
  const [draft, tokenizer] = await Promise.all([loadNodeModel(options.draftDir, 'quantized'), loadFolderTokenizer(options.targetDir)]);
  // 39 held-out prompts; streams past them take another window of the same files (their tokens differ from position 0, so no shared blocks).
  const texts = [...heldOutPrompts(39, 400), ...heldOutPrompts(39, 300)];
  const prompts = texts.map((t) => tokenizer.encode(t));
  const memo: DraftMemo = new Map();
  const records: BenchRecord[] = [];
  for (const batchWaitMs of BATCH_WAITS_MS) {
    records.push(...(await policyRuns(batchWaitMs)));
  }
  return records;

  /** Every level and mode against one origin whose batcher waits up to `batchWaitMs` for rows (origin/queue.ts). */
  async function policyRuns(batchWaitMs: number): Promise<BenchRecord[]> {
  const policy = batchWaitMs ? `, batch wait ${batchWaitMs} ms` : '';
  const origin = await startOrigin({
    port: options.port,
    targetDir: options.targetDir,
    id: 'origin-capacity',
    // One live KV sequence per stream (else rounds re-run up to a block); a queue deep enough for every stream.
    args: ['--cost-model', options.costModel, '--max-batch', String(maxStreams), '--batch-wait-ms', String(batchWaitMs), '--kv-sessions', String(2 * maxStreams), '--max-queue', '1024', '--kv-cache-mb', '1024'],
    log,
  });
  try {
    const client = new HttpOriginClient(origin.url, 120_000, { name: 'capacity-origin', vocabSize: draft.config.vocabSize });

    let replayMisses = 0;
    const proposerFor = (drafts: Drafts | 'record'): (() => Proposer) => {
      const live = () => new DraftModelProposer(draft.lm, 32);
      if (drafts === 'replayed') return () => new ReplayedDraft(memo, live, () => replayMisses++);
      if (drafts === 'record') return () => new RecordingDraft(live(), memo);
      return live;
    };
    const stream = async (plan: SpeculationPlan, drafts: Drafts | 'record', prompt: number[]): Promise<StreamRun> => {
      const stats = newStats('lockstep', plan.draftLength, 'token');
      const input: GenerationInput = { prompt, maxTokens, sampling: { temperature: 0, top_p: 1, top_k: 0, seed: 0 }, stopTokenIds: new Set(), maxPositions: draft.config.maxPositions };
      const started = performance.now();
      let first = 0;
      const tokens: number[] = [];
      for await (const piece of decode(input, plan, proposerFor(drafts), client, stats, undefined, new LinkEstimator())) {
        first ||= performance.now();
        tokens.push(...piece);
      }
      const end = performance.now();
      return { tokens, ttftMs: first - started, tpotMs: tokens.length > 1 ? (end - first) / (tokens.length - 1) : end - started, drafted: stats.drafted, accepted: stats.accepted, draftMs: stats.draftMs, rounds: stats.rounds };
    };
    const cell = async (m: (typeof MODES)[number], streams: number) => {
      const before = await counters(origin);
      const missesBefore = replayMisses;
      const started = performance.now();
      const runs = await Promise.all(Array.from({ length: streams }, (_, i) => stream(m.plan, m.drafts, prompts[i % prompts.length])));
      const wallMs = performance.now() - started;
      const after = await counters(origin);
      return { runs, wallMs, misses: replayMisses - missesBefore, ...diff(after, before) };
    };

    // Warm-up, unmeasured: both paths, the draft session, every prompt's target KV blocks in neither mode's favour.
    for (const m of MODES) await cell(m, 1);
    // The recording run (first origin only): every prompt a cell will use, alone, drafting live (unmeasured). On
    // later origins the same loop warms their target KV with every prompt, as the recording did on the first.
    const recording = memo.size === 0;
    log(`capacity${policy}: ${recording ? "recording the draft's proposals for" : 'warming'} ${Math.min(maxStreams, prompts.length)} prompts, one stream at a time`);
    for (let i = 0; i < Math.min(maxStreams, prompts.length); i++) await stream(EDGE_PLAN, recording ? 'record' : 'replayed', prompts[i]);
    const records: BenchRecord[] = [];
    const reference = new Map<number, number[]>();
    let targetStepMs = 0;
    for (const [level, streams] of streamCounts.entries()) {
      const order = MODES.map((_, j) => MODES[(level + j) % MODES.length]);
      const results = new Map<string, Awaited<ReturnType<typeof cell>>>();
      for (const m of order) {
        log(`capacity${policy}: ${streams} streams × ${maxTokens} tokens, ${m.mode}`);
        results.set(m.mode, await cell(m, streams));
      }
      // Greedy: every mode gives every stream the same tokens (batched or not, drafted or not), at every level.
      for (let i = 0; i < streams; i++) {
        const key = i % prompts.length;
        for (const m of MODES) {
          const tokens = results.get(m.mode)!.runs[i].tokens;
          if (!reference.has(key)) reference.set(key, tokens);
          else if (JSON.stringify(reference.get(key)) !== JSON.stringify(tokens)) {
            log(`capacity: WARNING stream ${i} (${streams} streams, ${m.mode}): tokens differ from another cell's (batch invariance: BENCHMARKS.md, Capacity)`);
          }
        }
      }
      const originOnly = results.get(MODES[0].mode)!;
      if (streams === 1) targetStepMs = originOnly.modelledMs / Math.max(1, originOnly.passes);
      const gpuPerToken = (r: Awaited<ReturnType<typeof cell>>) => r.modelledMs / sum(r.runs, (x) => x.tokens.length);
      for (const m of MODES) {
        const r = results.get(m.mode)!;
        const tokens = sum(r.runs, (x) => x.tokens.length);
        const drafted = sum(r.runs, (x) => x.drafted);
        const draftMsPerToken = drafted ? sum(r.runs, (x) => x.draftMs) / drafted : 0;
        const tpots = r.runs.map((x) => x.tpotMs);
        const verifyRounds = sum(r.runs, (x) => x.rounds);
        const record: BenchRecord = {
          suite: 'capacity',
          // The generic report table shows the mode only: it names the cell.
          mode: `${streams} streams, ${m.mode}${policy}`,
          speculation_mode: m.mode,
          batch_wait_ms: batchWaitMs,
          rtt_ms: 0,
          origin_cost: options.costModel,
          streams,
          tokens,
          tokens_per_s: round((tokens / r.wallMs) * 1000),
          ttft_ms: round(quantile(r.runs.map((x) => x.ttftMs), 0.5)),
          target_passes_per_token: round(r.rows / tokens),
          // Forward passes the origin ran (a batched pass counts once), per 1,000 output tokens; rows = the callers' passes.
          target_passes_per_1k_tokens: round((r.passes / tokens) * 1000),
          rows_per_1k_tokens: round((r.rows / tokens) * 1000),
          gpu_ms_per_1k_tokens: round((r.modelledMs / tokens) * 1000),
          tokens_per_gpu_s: round((tokens / r.modelledMs) * 1000),
          gpu_capacity_vs_origin_only: round(gpuPerToken(originOnly) / gpuPerToken(r)),
          tpot_p50_ms: round(quantile(tpots, 0.5)),
          tpot_p95_ms: round(quantile(tpots, 0.95)),
          mean_batch: round(r.rows / Math.max(1, r.passes)),
          // Passes that took longer on this CPU than modelled: they stretch wall time (tokens/s, TPOT), not GPU-ms.
          overrun_fraction: round(r.overruns / Math.max(1, r.passes)),
          mean_accepted: m.plan.draftLength ? round(tokens / Math.max(1, verifyRounds)) : 1,
          acceptance_rate: drafted ? round(sum(r.runs, (x) => x.accepted) / drafted) : null,
          draft_ms_per_token: round(draftMsPerToken),
          // c = draft ms per drafted token (this cell's, in Node) / modelled target ms per batch-1 pass (the 1-stream origin-only cell).
          c: drafted && targetStepMs ? round(draftMsPerToken / targetStepMs) : null,
          ...(m.drafts === 'replayed' ? { replay_misses: r.misses } : {}),
        };
        log(
          `  ${record.mode}: ${record.tokens_per_s} tok/s, ${record.target_passes_per_1k_tokens} passes/1k tok, ${record.gpu_ms_per_1k_tokens} GPU-ms/1k tok ` +
            `(${record.gpu_capacity_vs_origin_only}x), TPOT p50 ${record.tpot_p50_ms} p95 ${record.tpot_p95_ms} ms, batch ${record.mean_batch}, overruns ${record.overrun_fraction}, c ${record.c}` +
            (m.drafts === 'replayed' ? `, replay misses ${r.misses}` : ''),
        );
        records.push(record);
      }
    }
    return records;
  } finally {
    await origin.stop();
  }
  }
}

/** The origin's running totals from /metrics: modelled GPU ms, forward passes, rows (sequences) in them, overruns. */
async function counters(origin: Service): Promise<OriginCounters> {
  const exposition = parseExposition(await (await fetch(`${origin.url}/metrics`)).text());
  return {
    modelledMs: sampleValue(exposition, 'edgespec_origin_modelled_forward_ms'),
    passes: sampleValue(exposition, 'edgespec_origin_batch_size_count'),
    rows: sampleValue(exposition, 'edgespec_origin_batch_size_sum'),
    overruns: sampleValue(exposition, 'edgespec_origin_modelled_overruns'),
  };
}

const diff = (a: OriginCounters, b: OriginCounters): OriginCounters => ({ modelledMs: a.modelledMs - b.modelledMs, passes: a.passes - b.passes, rows: a.rows - b.rows, overruns: a.overruns - b.overruns });
const sum = <T>(xs: T[], f: (x: T) => number) => xs.reduce((a, x) => a + f(x), 0);
const quantile = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * q))];
