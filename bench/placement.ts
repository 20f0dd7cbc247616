import { heldOutPrompts } from '../test/support/prompts';
import { interleaved, round, streamOnce, summarise } from './measure';
import type { BenchRecord } from './records';
import type { BenchContext } from './run';

/**
 * Draft placement across link delays (README: Draft placement): origin-only
 * decoding, drafting in the Worker (lockstep, and adaptive, which hands over
 * to speculation at the origin when the link is slow), and drafting next to
 * the target (`placement: "origin"`), side by side on the same prompts at each
 * RTT of the sweep, for both origin costs. The origins run with `--draft`
 * (bench/run.ts), so origin-side drafting costs what onnxruntime-node's int8
 * draft costs on this CPU, while the GPU-cost-model origin holds only its
 * target passes to the modelled duration.
 */
const MODES = [
  { mode: 'origin-only', speculation: { draft_length: 0 } },
  { mode: 'edge lockstep k=4', speculation: { mode: 'lockstep', draft_length: 4, proposer: 'draft-model' } },
  { mode: 'edge adaptive k<=8', speculation: { mode: 'adaptive', draft_length: 8, proposer: 'draft-model' } },
  { mode: 'origin placement k=4', speculation: { placement: 'origin', draft_length: 4 } },
];

export async function placementSuite(ctx: BenchContext): Promise<BenchRecord[]> {
  const prompts = heldOutPrompts(ctx.quick ? 2 : 6, 400);
  const rtts = ctx.quick ? [0, 20, 100] : ctx.rtts;
  const maxTokens = ctx.quick ? 32 : 64;
  const records: BenchRecord[] = [];
  for (const [cost, origin] of [['measured', ctx.origins.measured], [ctx.gpuCostModel, ctx.origins.gpuModel]] as const) {
    ctx.proxy.upstream = origin.url;
    // Warm every path once (the draft sessions at the edge and at the origin, the target's KV) before measuring.
    ctx.proxy.rttMs = 0;
    for (const m of MODES) await streamOnce(ctx.edge, { prompt: prompts[0], max_tokens: 8, temperature: 0, speculation: m.speculation });
    for (const rtt of rtts) {
      ctx.proxy.rttMs = rtt;
      ctx.log(`placement: origin cost ${cost}, RTT ${rtt} ms, ${prompts.length} prompts × ${MODES.length} modes`);
      const runs = await interleaved(MODES, prompts.length, (m, i) => streamOnce(ctx.edge, { prompt: prompts[i], max_tokens: maxTokens, temperature: 0, speculation: m.speculation }));
      const summaries = MODES.map((m) => summarise(runs.get(m.mode)!, { suite: 'placement', mode: m.mode, rtt_ms: rtt, origin_cost: cost }));
      const baseline = summaries[0].tokens_per_s;
      for (const summary of summaries) records.push({ ...summary, speedup_vs_origin_only: round(summary.tokens_per_s / baseline) });
    }
  }
  return records;
}
