import { interleaved, streamOnce, summarise } from './measure';
import type { BenchRecord } from './records';
import type { EdgeTarget } from './sse';

export { median, round, streamOnce, summarise, type Run } from './measure';

/**
 * End-to-end generation through the edge, every mode side by side: for each
 * prompt, origin-only, lockstep, pipelined and adaptive run one after another
 * (in a rotating order), so all modes see the same machine load. Streams
 * every request to measure time to first token.
 */
export interface ModeSpec {
  mode: string;
  speculation: Record<string, unknown>;
}

export const MODES: ModeSpec[] = [
  { mode: 'origin-only', speculation: { draft_length: 0 } },
  { mode: 'lockstep', speculation: { mode: 'lockstep', draft_length: 4 } },
  { mode: 'pipelined', speculation: { mode: 'pipelined', draft_length: 3, depth: 2 } },
  { mode: 'adaptive', speculation: { mode: 'adaptive', draft_length: 8 } },
];

export interface SpeculationOptions {
  suite: string;
  edge: EdgeTarget;
  prompts: string[];
  maxTokens: number;
  temperature: number;
  rttMs: number;
  originCost: string;
  modes?: ModeSpec[];
  /** Extra fields merged into every request's `speculation` object (e.g. { method: 'block' }). */
  log: (line: string) => void;
}

export async function speculationSuite(options: SpeculationOptions): Promise<BenchRecord[]> {
  const modes = options.modes ?? MODES;
  const body = (prompt: string, i: number, m: ModeSpec) => ({ prompt, max_tokens: options.maxTokens, temperature: options.temperature, seed: i, speculation: m.speculation });
  // One unmeasured pass: warms caches and lets the adaptive controller see this link before it is judged.
  for (const m of modes) await streamOnce(options.edge, body(options.prompts[0], 0, m));
  const runs = await interleaved(modes, options.prompts.length, (m, i) => streamOnce(options.edge, body(options.prompts[i], i, m)));
  return modes.map(({ mode }) => {
    const record = summarise(runs.get(mode)!, { suite: options.suite, mode, rtt_ms: options.rttMs, origin_cost: options.originCost, temperature: options.temperature });
    options.log(
      `  ${options.originCost} RTT ${options.rttMs} ms ${mode}: ${record.tokens_per_s} tok/s, TTFT ${record.ttft_ms} ms, ${record.target_passes_per_token} passes/token, ` +
        `mean accepted ${record.mean_accepted}, draft ${record.draft_ms_per_token} ms/token${record.handover_fraction ? `, hand-over ${record.handover_fraction}` : ''}`,
    );
    return record;
  });
}
