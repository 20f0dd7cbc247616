import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { PROPOSER_KINDS } from '../functions/proposers/kinds';
import { heldOutPrompts } from '../test/support/prompts';
import { interleaved, round, streamOnce, summarise, type Run } from './measure';
import type { BenchRecord } from './records';
import type { BenchContext } from './run';
import { postJson, type EdgeTarget } from './sse';

/**
 * Proposers and Predicted Outputs on three workloads, greedy, lockstep k = 4,
 * for both origin costs and every RTT of the sweep (`--quick`: RTT 0 and 20,
 * fewer prompts). Within one workload, origin cost and RTT every mode runs on
 * every prompt, prompt by prompt in rotating order (bench/measure.ts), so the
 * ratios are measured side by side:
 *
 * - `code-continuation`: the held-out prompts of the speculation suite.
 * - `code-editing`: a held-out source file followed by the start of a second
 *   copy of it (what a completion model reads as "now write the file again"),
 *   so the answer is expected to repeat the file; without a prediction, and
 *   with `prediction` = the rest of the file (OpenAI's editing use); plus two
 *   bounds: the prediction is the target's own earlier answer (entirely
 *   right: a retried request) or its first half (right until the middle).
 * - `repeated-request`: one tenant sends near-identical requests in turn (a
 *   held-out file re-sent with a one-line edit near its middle each time, as
 *   an editor re-asking after every small change); the first turn of each
 *   file only builds the tenant's history and is not measured.
 *
 * Every mode has its own fresh tenant in every cell (workload × origin cost ×
 * RTT), so the per-tenant suffix index holds only that mode's own earlier
 * outputs in this cell: no configuration drafts from another's output of the
 * same prompt. Before the measured pass, every measured prompt is sent once
 * for 1 token on its mode's tenant (unmeasured), so the edge's draft KV and
 * the origin's target KV of the prompt are warm, as for the speculation
 * suite's shared tenant, while the suffix index learns nothing from it (one
 * token makes no n-gram). Every request is followed by a SETTLE_MS pause, so
 * the background work a response leaves in the isolate is not charged to the
 * next mode's request. Reports tokens/s vs origin-only and vs the draft model alone,
 * target passes per token, tokens and accepted drafts per verify round, per
 * proposer (`speculation.proposers`), and the cell's draft/target cost ratio.
 */
type PredictionKind = 'file' | 'answer' | 'half-answer';

interface ModeSpec {
  mode: string;
  /** `speculation.proposer`; null = origin-only decoding. */
  proposer: string | null;
  speculation: Record<string, unknown>;
  prediction?: PredictionKind;
}

interface Item {
  prompt: string;
  predictions?: Record<PredictionKind, string>;
  /** false: a turn that only builds the tenant's history (repeated-request). */
  measured: boolean;
}

interface Workload {
  name: 'code-continuation' | 'code-editing' | 'repeated-request';
  modes: ModeSpec[];
  items: Item[];
  maxTokens: number;
}

const K = 4;
/** Pause after every request (see measureCell). */
const SETTLE_MS = 150;
const lockstep = (proposer: string) => ({ proposer, mode: 'lockstep', draft_length: K });
const ORIGIN_ONLY: ModeSpec = { mode: 'origin-only', proposer: null, speculation: { draft_length: 0 } };
/** Origin-only and every proposer kind alone (functions/proposers/kinds.ts: draft-model, prompt-lookup, suffix, hybrid). */
const PROPOSER_MODES: ModeSpec[] = [ORIGIN_ONLY, ...PROPOSER_KINDS.map((kind) => ({ mode: kind, proposer: kind, speculation: lockstep(kind) }))];
const EDITING_MODES: ModeSpec[] = [
  ...PROPOSER_MODES,
  { mode: 'prediction (file) + draft-model', proposer: 'draft-model', speculation: lockstep('draft-model'), prediction: 'file' },
  { mode: 'prediction (file) + prompt-lookup', proposer: 'prompt-lookup', speculation: lockstep('prompt-lookup'), prediction: 'file' },
  { mode: 'prediction (file) + hybrid', proposer: 'hybrid', speculation: lockstep('hybrid'), prediction: 'file' },
  { mode: 'prediction (right) + hybrid', proposer: 'hybrid', speculation: lockstep('hybrid'), prediction: 'answer' },
  { mode: 'prediction (half right) + hybrid', proposer: 'hybrid', speculation: lockstep('hybrid'), prediction: 'half-answer' },
];

/** Rows of the held-out prompts (whole packages never trained on). */
function heldOutRows(): Array<{ prompt: string; reference: string }> {
  return readFileSync('models/corpus/bench_prompts.jsonl', 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as { prompt: string; reference: string });
}

/** Held-out files, each with the start of its second copy; `rest` = the file after that start (the prediction). */
function editTasks(count: number): Array<{ prompt: string; rest: string }> {
  return heldOutRows()
    .slice(0, count)
    .map((r) => {
      // ~900 characters of the file: its two copies stay well inside the 1024-token context.
      const file = (r.prompt + r.reference).slice(-900);
      const cut = file.indexOf('\n', 150) + 1;
      return { prompt: `${file}\n\n${file.slice(0, cut)}`, rest: file.slice(cut) };
    });
}

/** The one-line edits of the repeated-request workload: turn t appends EDITS[t] to the line nearest the middle (turn 0: the file as it is). */
const EDITS = ['', ' // reviewed', ' // TODO: tests', ' // keep in sync', ' // hot path', ' // see above'];

/** `turns` near-identical versions of each of `count` held-out files (other files than the continuation and editing workloads use). */
function repeatedItems(count: number, turns: number): Item[] {
  if (turns > EDITS.length) throw new Error(`repeated-request: at most ${EDITS.length} turns`);
  const rows = heldOutRows();
  const bases = rows.slice(rows.length - count).map((r) => r.prompt.slice(-400));
  return bases.flatMap((base) => {
    const middle = base.indexOf('\n', Math.floor(base.length / 2));
    const at = middle > 0 ? middle : base.length;
    return Array.from({ length: turns }, (_, t) => ({ prompt: base.slice(0, at) + EDITS[t] + base.slice(at), measured: t > 0 }));
  });
}

export async function proposersSuite(ctx: BenchContext): Promise<BenchRecord[]> {
  const quick = ctx.quick;
  const rtts = quick ? [0, 20] : ctx.rtts;
  const run = randomBytes(3).toString('hex');
  const editingTokens = quick ? 64 : 128;

  // The target's own greedy answer to each editing prompt (origin-only, the same on both origins): the "entirely right" prediction.
  ctx.proxy.upstream = ctx.origins.measured.url;
  ctx.proxy.rttMs = 0;
  const edits: Item[] = [];
  for (const { prompt, rest } of editTasks(quick ? 2 : 5)) {
    const response = await postJson(ctx.edge, '/v1/completions', { prompt, max_tokens: editingTokens, temperature: 0, speculation: { draft_length: 0 } });
    if (!response.ok) throw new Error(`editing answer: ${response.status} ${await response.text()}`);
    const answer = ((await response.json()) as { choices: Array<{ text: string }> }).choices[0].text;
    const half = answer.slice(0, Math.floor(answer.length / 2)) + rest.slice(Math.floor(rest.length / 2));
    edits.push({ prompt, predictions: { file: rest, answer, 'half-answer': half }, measured: true });
  }
  const workloads: Workload[] = [
    { name: 'code-continuation', modes: PROPOSER_MODES, items: heldOutPrompts(quick ? 2 : 5, 400).map((prompt) => ({ prompt, measured: true })), maxTokens: 64 },
    { name: 'code-editing', modes: EDITING_MODES, items: edits, maxTokens: editingTokens },
    { name: 'repeated-request', modes: PROPOSER_MODES, items: repeatedItems(quick ? 2 : 3, quick ? 3 : 4), maxTokens: 64 },
  ];

  const records: BenchRecord[] = [];
  for (const [cost, origin] of [['measured', ctx.origins.measured], [ctx.gpuCostModel, ctx.origins.gpuModel]] as const) {
    ctx.proxy.upstream = origin.url;
    for (const rtt of rtts) {
      ctx.proxy.rttMs = rtt;
      for (const workload of workloads) {
        const measured = workload.items.filter((i) => i.measured).length;
        ctx.log(`proposers: ${workload.name}, origin cost ${cost}, RTT ${rtt} ms, ${measured} measured prompts (${workload.items.length} in all) × ${workload.modes.length} modes, ${workload.maxTokens} tokens`);
        records.push(...(await measureCell(ctx, workload, cost, rtt, run)));
      }
    }
  }
  return records;
}

/** One workload at one origin cost and RTT: every mode side by side, each on its own fresh tenant. */
async function measureCell(ctx: BenchContext, workload: Workload, cost: string, rtt: number, run: string): Promise<BenchRecord[]> {
  const tenant = async (label: string): Promise<EdgeTarget> => ({ url: ctx.edge.url, apiKey: (await ctx.edge.createTenantKey({}, `bench-${run}-${randomBytes(4).toString('hex')}-${label}`.slice(0, 64))).key });
  const tenants = new Map<string, EdgeTarget>();
  for (const m of workload.modes) tenants.set(m.mode, await tenant(m.proposer ?? 'origin'));
  const body = (item: Item, m: ModeSpec, maxTokens: number, withPrediction = true) => ({
    prompt: item.prompt,
    max_tokens: maxTokens,
    temperature: 0,
    speculation: m.speculation,
    ...(withPrediction && m.prediction && item.predictions ? { prediction: { type: 'content', content: item.predictions[m.prediction] } } : {}),
  });
  // Every request is followed by a pause, so the work a response leaves in the isolate (the draft
  // model catching up and the prefix-cache store, in waitUntil) is not charged to the next request.
  const send = async (target: EdgeTarget, request: Record<string, unknown>) => {
    const run = await streamOnce(target, request);
    await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
    return run;
  };
  // Unmeasured: every mode once on a throwaway tenant (isolate, origin and link warm for this cell).
  const warm = await tenant('warm-up');
  for (const m of workload.modes) await send(warm, body(workload.items[0], m, 16));
  // Unmeasured: each measured prompt once, 1 token, on its mode's tenant: its draft KV (edge prefix cache) and target KV
  // (origin) are warm before it is measured, and one output token adds no n-gram to the tenant's history.
  await interleaved(workload.modes, workload.items.length, async (m, i) => {
    if (workload.items[i].measured) await send(tenants.get(m.mode)!, body(workload.items[i], m, 1, false));
    return null;
  });

  const runs = await interleaved(workload.modes, workload.items.length, async (m, i) => {
    const item = workload.items[i];
    const run = await send(tenants.get(m.mode)!, body(item, m, workload.maxTokens));
    // A history turn (repeated-request) only feeds the tenant's suffix index.
    return item.measured ? run : null;
  });

  const fields = (mode: string) => ({ suite: 'proposers', workload: workload.name, mode, rtt_ms: rtt, origin_cost: cost, temperature: 0, max_tokens: workload.maxTokens });
  const baseline = summarise(runs.get(ORIGIN_ONLY.mode)!, fields(ORIGIN_ONLY.mode));
  const draftModel = summarise(runs.get('draft-model')!, fields('draft-model'));
  // The cell's cost ratio c = draft step / target step: the draft model's edge time per drafted token over origin-only decoding's forward time per token.
  const targetStep = Number(baseline.target_ms_per_pass);
  const costFields = { draft_step_ms: draftModel.draft_ms_per_token, target_step_ms: targetStep, draft_target_cost_ratio: targetStep > 0 ? round(draftModel.draft_ms_per_token / targetStep) : null };
  return workload.modes.map((m) => {
    const r = runs.get(m.mode)!;
    const record = summarise(r, { ...fields(m.mode), proposer: m.proposer, prediction: m.prediction ?? null, proposers: perProposer(r), ...costFields });
    const sum = (f: (x: Run) => number) => r.reduce((a, x) => a + f(x), 0);
    const verifyRounds = sum((x) => x.rounds - x.originTokens);
    record.accepted_per_round = verifyRounds > 0 ? round(sum((x) => x.accepted) / verifyRounds) : null;
    if (m.prediction) record.accepted_prediction_per_token = round(sum((x) => x.acceptedPrediction) / Math.max(1, sum((x) => x.tokens)));
    record.vs_origin_only = round(record.tokens_per_s / baseline.tokens_per_s);
    record.vs_draft_model = round(record.tokens_per_s / draftModel.tokens_per_s);
    ctx.log(
      `  ${workload.name} ${cost} RTT ${rtt} ms ${m.mode}: ${record.tokens_per_s} tok/s (${record.vs_origin_only}x origin-only, ${record.vs_draft_model}x draft-model), ` +
        `${record.target_passes_per_token} passes/token, ${record.mean_accepted} tokens/round, ${record.accepted_per_round ?? '-'} accepted drafts/round, ` +
        `per proposer ${JSON.stringify(record.proposers)}${m.prediction ? `, accepted prediction tokens per output token ${record.accepted_prediction_per_token}` : ''}, c ${record.draft_target_cost_ratio}`,
    );
    return record;
  });
}

/** Per proposer that drafted (a hybrid's members by name): verify rounds, drafted and accepted tokens, accepted drafts per round, summed over the runs. */
function perProposer(runs: Run[]): Record<string, { rounds: number; drafted: number; accepted: number; accepted_per_round: number }> {
  const totals: Record<string, { rounds: number; drafted: number; accepted: number }> = {};
  for (const x of runs) {
    for (const [name, p] of Object.entries(x.proposers)) {
      const t = (totals[name] ??= { rounds: 0, drafted: 0, accepted: 0 });
      t.rounds += p.rounds;
      t.drafted += p.drafted;
      t.accepted += p.accepted;
    }
  }
  return Object.fromEntries(Object.entries(totals).map(([name, t]) => [name, { ...t, accepted_per_round: round(t.accepted / Math.max(1, t.rounds)) }]));
}
