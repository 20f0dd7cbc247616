import type { BenchRecord } from './records';
import type { EdgeTarget } from './sse';
import { streamOnce, summarise, type Run } from './speculation';

/**
 * Block verification (Sun et al. 2024) against token-level verification on the
 * same prompts and seeds, sampled (greedy decisions are identical), lockstep
 * with a fixed k so only the verification rule differs. Block verification
 * never accepts fewer tokens in expectation; the paper reports +5-8% wall time.
 */
export async function blockVerificationSuite(options: { edge: EdgeTarget; prompts: string[]; maxTokens: number; temperature: number; draftLength: number; originCost: string; log: (l: string) => void }): Promise<BenchRecord[]> {
  const methods = ['token', 'block'] as const;
  const runs = new Map<string, Run[]>(methods.map((m) => [m, []]));
  for (const [i, prompt] of options.prompts.entries()) {
    for (let j = 0; j < methods.length; j++) {
      const method = methods[(i + j) % methods.length];
      const body = { prompt, max_tokens: options.maxTokens, temperature: options.temperature, seed: i, speculation: { mode: 'lockstep', draft_length: options.draftLength, method } };
      runs.get(method)!.push(await streamOnce(options.edge, body));
    }
  }
  return methods.map((method) => {
    const record = summarise(runs.get(method)!, { suite: 'block-verification', mode: `lockstep-${method}`, rtt_ms: 0, origin_cost: options.originCost, temperature: options.temperature, draft_length: options.draftLength });
    options.log(`  ${method}-level verification, T=${options.temperature}, k=${options.draftLength}: mean accepted ${record.mean_accepted}, acceptance ${record.acceptance_rate}, ${record.tokens_per_s} tok/s`);
    return record;
  });
}
