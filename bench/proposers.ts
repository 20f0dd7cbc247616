import { readFileSync } from 'node:fs';
import type { BenchRecord } from './records';
import type { BenchContext } from './run';
import { summarise, type Run } from './speculation';
import { postJson, streamCompletion } from './sse';

/**
 * Proposers and Predicted Outputs on an editing workload: the prompt is a
 * held-out source file followed by the start of a second copy of it (what a
 * completion model reads as "now write the file again"), so the answer is
 * expected to repeat the file. Modes, side by side per prompt in rotating
 * order: origin-only, the draft model, the hybrid, and both with
 * `prediction` = the rest of the file (OpenAI's editing use), plus the
 * hybrid with a prediction that is the target's own earlier answer (entirely
 * right) and its first half (right until the middle). Reports tokens/s vs
 * origin-only, target passes per token, and drafts accepted per round per
 * proposer (`speculation.proposers`).
 */
interface ModeSpec {
  mode: string;
  speculation: Record<string, unknown>;
  prediction?: 'file' | 'answer' | 'half-answer';
}

const K = 4;
const MODES: ModeSpec[] = [
  { mode: 'origin-only', speculation: { draft_length: 0 } },
  { mode: 'draft-model', speculation: { proposer: 'draft-model', mode: 'lockstep', draft_length: K } },
  { mode: 'hybrid', speculation: { proposer: 'hybrid', mode: 'lockstep', draft_length: K } },
  { mode: 'draft-model + prediction (file)', speculation: { proposer: 'draft-model', mode: 'lockstep', draft_length: K }, prediction: 'file' },
  { mode: 'hybrid + prediction (file)', speculation: { proposer: 'hybrid', mode: 'lockstep', draft_length: K }, prediction: 'file' },
  { mode: 'hybrid + prediction (right)', speculation: { proposer: 'hybrid', mode: 'lockstep', draft_length: K }, prediction: 'answer' },
  { mode: 'hybrid + prediction (half right)', speculation: { proposer: 'hybrid', mode: 'lockstep', draft_length: K }, prediction: 'half-answer' },
];

/** The GPU-cost-model origin's model (bench/run.ts starts it with `--cost-model h100-llama-3.1-8b`). */
const GPU_COST_MODEL = 'h100-llama-3.1-8b';

interface EditTask {
  prompt: string;
  predictions: Record<NonNullable<ModeSpec['prediction']>, string>;
}

/** Held-out files (whole packages never trained on), each with the start of its second copy. */
function editTasks(count: number): Array<{ prompt: string; rest: string }> {
  const rows = readFileSync('models/corpus/bench_prompts.jsonl', 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as { prompt: string; reference: string });
  return rows.slice(0, count).map((r) => {
    // ~900 characters of the file: its two copies stay well inside the 1024-token context.
    const file = (r.prompt + r.reference).slice(-900);
    const cut = file.indexOf('\n', 150) + 1;
    return { prompt: `${file}\n\n${file.slice(0, cut)}`, rest: file.slice(cut) };
  });
}

export async function proposersSuite(ctx: BenchContext): Promise<BenchRecord[]> {
  const maxTokens = ctx.quick ? 64 : 128;
  const rtts = ctx.quick ? [20] : [0, 20, 50];
  const records: BenchRecord[] = [];
  for (const [cost, origin] of [['measured', ctx.origins.measured], [GPU_COST_MODEL, ctx.origins.gpuModel]] as const) {
    ctx.proxy.upstream = origin.url;
    ctx.proxy.rttMs = 0;
    // The target's own greedy answer to each prompt: the "entirely right" prediction.
    const tasks: EditTask[] = [];
    for (const { prompt, rest } of editTasks(ctx.quick ? 3 : 8)) {
      const response = await postJson(ctx.edge, '/v1/completions', { prompt, max_tokens: maxTokens, temperature: 0, speculation: { draft_length: 0 } });
      const answer = ((await response.json()) as { choices: Array<{ text: string }> }).choices[0].text;
      tasks.push({ prompt, predictions: { file: rest, answer, 'half-answer': answer.slice(0, Math.floor(answer.length / 2)) + rest.slice(Math.floor(rest.length / 2)) } });
    }
    for (const rtt of rtts) {
      ctx.proxy.rttMs = rtt;
      ctx.log(`proposers: origin cost ${cost}, RTT ${rtt} ms, ${tasks.length} editing prompts × ${MODES.length} modes`);
      records.push(...(await measure(ctx, tasks, maxTokens, rtt, cost)));
    }
  }
  return records;
}

async function measure(ctx: BenchContext, tasks: EditTask[], maxTokens: number, rtt: number, cost: string): Promise<BenchRecord[]> {
  const body = (task: EditTask, m: ModeSpec) => ({
    prompt: task.prompt,
    max_tokens: maxTokens,
    temperature: 0,
    speculation: m.speculation,
    ...(m.prediction ? { prediction: { type: 'content', content: task.predictions[m.prediction] } } : {}),
  });
  const runs = new Map<string, Array<Run & { proposers: Record<string, { rounds: number; accepted: number }>; acceptedPrediction: number }>>(MODES.map((m) => [m.mode, []]));
  // One unmeasured pass per mode warms the isolate and the origin's KV.
  for (const m of MODES) await streamCompletion(ctx.edge, body(tasks[0], m));
  for (const [i, task] of tasks.entries()) {
    for (let j = 0; j < MODES.length; j++) {
      const m = MODES[(i + j) % MODES.length];
      const { ttftMs, wallMs, last } = await streamCompletion(ctx.edge, body(task, m));
      const s = last.speculation;
      runs.get(m.mode)!.push({
        tokens: last.usage.completion_tokens,
        wallMs,
        ttftMs,
        rounds: s.rounds,
        targetPasses: s.target_passes ?? s.rounds,
        originTokens: s.origin_tokens ?? 0,
        drafted: s.drafted,
        accepted: s.accepted,
        draftMs: s.draft_ms,
        handedOver: s.handover_at != null,
        proposers: s.proposers ?? {},
        acceptedPrediction: m.prediction ? last.usage.completion_tokens_details.accepted_prediction_tokens : 0,
      });
    }
  }
  const baseline = summarise(runs.get('origin-only')!, { suite: 'proposers', mode: 'origin-only', rtt_ms: rtt, origin_cost: cost });
  return MODES.map(({ mode, prediction }) => {
    const r = runs.get(mode)!;
    const perProposer: Record<string, { rounds: number; accepted: number }> = {};
    for (const x of r) {
      for (const [name, p] of Object.entries(x.proposers)) {
        const t = (perProposer[name] ??= { rounds: 0, accepted: 0 });
        t.rounds += p.rounds;
        t.accepted += p.accepted;
      }
    }
    const acceptedPerRound = Object.fromEntries(Object.entries(perProposer).map(([name, p]) => [name, { rounds: p.rounds, accepted_per_round: Math.round((p.accepted / Math.max(1, p.rounds)) * 100) / 100 }]));
    const tokens = r.reduce((a, x) => a + x.tokens, 0);
    const record = summarise(r, {
      suite: 'proposers',
      mode,
      rtt_ms: rtt,
      origin_cost: cost,
      temperature: 0,
      proposers: acceptedPerRound,
      ...(prediction ? { accepted_prediction_per_token: Math.round((r.reduce((a, x) => a + x.acceptedPrediction, 0) / tokens) * 100) / 100 } : {}),
    });
    record.vs_origin_only = Math.round((record.tokens_per_s / baseline.tokens_per_s) * 100) / 100;
    ctx.log(
      `  ${cost} RTT ${rtt} ms ${mode}: ${record.tokens_per_s} tok/s (${record.vs_origin_only}x origin-only), ${record.target_passes_per_token} passes/token, ` +
        `mean accepted ${record.mean_accepted}, per proposer ${JSON.stringify(acceptedPerRound)}${prediction ? `, accepted prediction tokens per output token ${record.accepted_prediction_per_token}` : ''}`,
    );
    return record;
  });
}
