import type { BenchRecord } from './records';
import { streamCompletion, type EdgeTarget } from './sse';

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

export interface Run {
  tokens: number;
  wallMs: number;
  ttftMs: number;
  rounds: number;
  targetPasses: number;
  originTokens: number;
  drafted: number;
  accepted: number;
  draftMs: number;
  handedOver: boolean;
}

export async function speculationSuite(options: SpeculationOptions): Promise<BenchRecord[]> {
  const modes = options.modes ?? MODES;
  const runs = new Map<string, Run[]>(modes.map((m) => [m.mode, []]));
  const body = (prompt: string, i: number, m: ModeSpec) => ({ prompt, max_tokens: options.maxTokens, temperature: options.temperature, seed: i, speculation: m.speculation });
  // One unmeasured pass: warms caches and lets the adaptive controller see this link before it is judged.
  for (const m of modes) await streamOnce(options.edge, body(options.prompts[0], 0, m));
  for (const [i, prompt] of options.prompts.entries()) {
    for (let j = 0; j < modes.length; j++) {
      const m = modes[(i + j) % modes.length];
      runs.get(m.mode)!.push(await streamOnce(options.edge, body(prompt, i, m)));
    }
  }
  return modes.map(({ mode }) => {
    const record = summarise(runs.get(mode)!, { suite: options.suite, mode, rtt_ms: options.rttMs, origin_cost: options.originCost, temperature: options.temperature });
    options.log(
      `  ${options.originCost} RTT ${options.rttMs} ms ${mode}: ${record.tokens_per_s} tok/s, TTFT ${record.ttft_ms} ms, ${record.target_passes_per_token} passes/token, ` +
        `mean accepted ${record.mean_accepted}, draft ${record.draft_ms_per_token} ms/token${record.handover_fraction ? `, hand-over ${record.handover_fraction}` : ''}`,
    );
    return record;
  });
}

export function summarise(r: Run[], fields: Pick<BenchRecord, 'suite' | 'mode' | 'rtt_ms' | 'origin_cost'> & Record<string, unknown>): BenchRecord {
  const sum = (f: (x: Run) => number) => r.reduce((a, x) => a + f(x), 0);
  const tokens = sum((x) => x.tokens);
  const verifyRounds = sum((x) => x.rounds - x.originTokens);
  return {
    ...fields,
    tokens_per_s: round((tokens / sum((x) => x.wallMs)) * 1000),
    ttft_ms: round(median(r.map((x) => x.ttftMs))),
    target_passes_per_token: round(sum((x) => x.targetPasses) / tokens),
    // Tokens per verify round (the target's own token included); 1 for origin-only decoding.
    mean_accepted: verifyRounds > 0 ? round((tokens - sum((x) => x.originTokens)) / verifyRounds) : 1,
    draft_ms_per_token: sum((x) => x.drafted) ? round(sum((x) => x.draftMs) / sum((x) => x.drafted)) : 0,
    acceptance_rate: sum((x) => x.drafted) ? round(sum((x) => x.accepted) / sum((x) => x.drafted)) : null,
    handover_fraction: round(r.filter((x) => x.handedOver).length / r.length),
    tokens,
    prompts: r.length,
  };
}

export async function streamOnce(edge: EdgeTarget, body: Record<string, unknown>): Promise<Run> {
  const { ttftMs, wallMs, last } = await streamCompletion(edge, body);
  const s = last.speculation;
  return {
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
  };
}

export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
export const round = (v: number) => Math.round(v * 100) / 100;
