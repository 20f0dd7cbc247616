import { heldOutPrompts } from '../test/support/prompts';
import { interleaved, round, streamOnce, summarise, type Run } from './measure';
import type { BenchRecord } from './records';
import type { BenchContext } from './run';

/**
 * The speculation peers side by side (README: Draft placement): origin-only
 * decoding, speculation next to the target, edge drafting in lockstep,
 * pipelined and branch-ahead, and the placement-adaptive default (adaptive
 * mode, `placement: "auto"`), on the same prompts and seeds at each RTT of
 * the sweep, greedy and sampled, for both origin costs.
 *
 * Every peer drafts with the draft model alone (`proposer: "draft-model"`, at
 * the origin too), so no peer gains from suffix matches over the benchmark's
 * own repeated outputs. The origins run with `--draft` (bench/run.ts): their
 * draft steps run for real in onnxruntime-node on this CPU and are charged as
 * measured even under the GPU cost model, which holds only target passes to
 * the modelled duration. Each record carries the draft/target cost ratio c of
 * its group (edge and origin drafts), so a slow machine can be told from a
 * slow design.
 */
const PEERS = [
  { mode: 'origin-only', speculation: { draft_length: 0 } },
  { mode: 'origin-side speculation k=4', speculation: { placement: 'origin', draft_length: 4 } },
  { mode: 'edge lockstep k=4', speculation: { mode: 'lockstep', placement: 'edge', draft_length: 4 } },
  { mode: 'edge pipelined k=4 depth 2', speculation: { mode: 'pipelined', placement: 'edge', draft_length: 4, depth: 2 } },
  { mode: 'edge branch-ahead k=4', speculation: { mode: 'branch-ahead', placement: 'edge', draft_length: 4 } },
  { mode: 'placement-adaptive (default)', speculation: { mode: 'adaptive', placement: 'auto', draft_length: 8 } },
].map((p) => ({ ...p, speculation: { ...p.speculation, proposer: 'draft-model' } }));

const TEMPERATURES = [0, 0.8];

export async function placementSuite(ctx: BenchContext): Promise<BenchRecord[]> {
  const prompts = heldOutPrompts(ctx.quick ? 1 : 3, 400);
  const rtts = ctx.quick ? [0, 50] : ctx.rtts;
  // Long enough that one RTT of start-up does not decide the ratio.
  const maxTokens = ctx.quick ? 48 : 128;
  const records: BenchRecord[] = [];
  const body = (speculation: object, prompt: string, temperature: number, i: number, tokens = maxTokens) => ({
    prompt,
    max_tokens: tokens,
    temperature,
    ...(temperature > 0 ? { seed: 1000 + i } : {}),
    speculation,
  });
  for (const [cost, origin] of [['measured', ctx.origins.measured], [ctx.gpuCostModel, ctx.origins.gpuModel]] as const) {
    ctx.proxy.upstream = origin.url;
    // Warm every path once (the draft sessions at the edge and at the origin, the target's KV) before measuring.
    ctx.proxy.rttMs = 0;
    for (const p of PEERS) await streamOnce(ctx.edge, body(p.speculation, prompts[0], 0, 0, 8));
    for (const rtt of rtts) {
      ctx.proxy.rttMs = rtt;
      for (const temperature of TEMPERATURES) {
        // The isolate serves many requests over one link: let it see this one before the adaptive default is measured.
        for (let i = 0; i < 2; i++) await streamOnce(ctx.edge, body(PEERS[PEERS.length - 1].speculation, prompts[0], temperature, i, 16));
        ctx.log(`placement: origin cost ${cost}, RTT ${rtt} ms, T ${temperature}, ${prompts.length} prompts × ${PEERS.length} peers × ${maxTokens} tokens`);
        const runs = await interleaved(PEERS, prompts.length, (p, i) => streamOnce(ctx.edge, body(p.speculation, prompts[i], temperature, i)));
        const costRatio = draftTargetRatio(runs);
        const summaries = PEERS.map((p) => ({
          ...summarise(runs.get(p.mode)!, { suite: 'placement', mode: p.mode, rtt_ms: rtt, origin_cost: cost, temperature }),
          ...costRatio,
        }));
        const baseline = summaries[0].tokens_per_s;
        const bestPeer = Math.max(...summaries.slice(0, -1).map((s) => s.tokens_per_s));
        for (const summary of summaries) {
          records.push({ ...summary, speedup_vs_origin_only: round(summary.tokens_per_s / baseline), vs_best_peer: round(summary.tokens_per_s / bestPeer) });
        }
      }
    }
  }
  return records;
}

/**
 * c = draft ms per drafted token / target ms per step, for the Worker's draft
 * (edge lockstep's rounds, as workerd's clock timed them) and the origin's
 * (its own draft timing), over the target's one-token step (origin-only decoding).
 */
function draftTargetRatio(runs: Map<string, Run[]>): { c_edge: number | null; c_origin: number | null } {
  const sum = (rs: Run[], f: (r: Run) => number) => rs.reduce((a, r) => a + f(r), 0);
  const originOnly = runs.get('origin-only')!;
  const targetStep = sum(originOnly, (r) => r.originForwardMs) / Math.max(1, sum(originOnly, (r) => r.targetPasses));
  const edge = runs.get('edge lockstep k=4')!;
  const atOrigin = runs.get('origin-side speculation k=4')!;
  const edgeDraft = sum(edge, (r) => r.drafted) ? sum(edge, (r) => r.draftMs) / sum(edge, (r) => r.drafted) : null;
  const originDraft = sum(atOrigin, (r) => r.originDraftSteps) ? sum(atOrigin, (r) => r.draftMs) / sum(atOrigin, (r) => r.originDraftSteps) : null;
  const ratio = (ms: number | null) => (ms === null || targetStep <= 0 ? null : round(ms / targetStep));
  return { c_edge: ratio(edgeDraft), c_origin: ratio(originDraft) };
}
