import type { BenchRecord } from './records';

/**
 * End-to-end generation through the edge: origin-only decoding vs lockstep
 * speculation, interleaved prompt by prompt so both see the same machine load.
 * Streams every request to measure time to first token.
 */
export interface SpeculationOptions {
  edgeUrl: string;
  prompts: string[];
  maxTokens: number;
  temperatures: number[];
  draftLength: number;
  rttMs: number;
  log: (line: string) => void;
}

interface Run {
  tokens: number;
  wallMs: number;
  ttftMs: number;
  rounds: number;
  drafted: number;
  accepted: number;
  draftMs: number;
}

export async function speculationSuite(options: SpeculationOptions): Promise<BenchRecord[]> {
  const records: BenchRecord[] = [];
  const modes = [
    { mode: 'origin-only', draftLength: 0 },
    { mode: 'lockstep', draftLength: options.draftLength },
  ];
  for (const temperature of options.temperatures) {
    const runs = new Map<string, Run[]>(modes.map((m) => [m.mode, []]));
    for (const [i, prompt] of options.prompts.entries()) {
      for (const { mode, draftLength } of modes) {
        runs.get(mode)!.push(await streamOnce(options.edgeUrl, { prompt, max_tokens: options.maxTokens, temperature, seed: i, speculation: { draft_length: draftLength } }));
      }
      if ((i + 1) % 5 === 0 || i + 1 === options.prompts.length) options.log(`  temperature ${temperature}: ${i + 1}/${options.prompts.length} prompts`);
    }
    for (const { mode } of modes) {
      const r = runs.get(mode)!;
      const sum = (f: (x: Run) => number) => r.reduce((a, x) => a + f(x), 0);
      const tokens = sum((x) => x.tokens);
      const rounds = sum((x) => x.rounds);
      const record: BenchRecord = {
        suite: 'speculation',
        mode,
        temperature,
        draft_length: mode === 'origin-only' ? 0 : options.draftLength,
        rtt_ms: options.rttMs,
        tokens_per_s: round((tokens / sum((x) => x.wallMs)) * 1000),
        ttft_ms: round(median(r.map((x) => x.ttftMs))),
        target_passes_per_token: round(rounds / tokens),
        mean_accepted: mode === 'origin-only' ? 1 : round(tokens / rounds),
        draft_ms_per_token: sum((x) => x.drafted) ? round(sum((x) => x.draftMs) / sum((x) => x.drafted)) : 0,
        acceptance_rate: sum((x) => x.drafted) ? round(sum((x) => x.accepted) / sum((x) => x.drafted)) : null,
        tokens,
        prompts: r.length,
        origin_cost: 'measured',
      };
      options.log(`  ${mode} T=${temperature}: ${record.tokens_per_s} tok/s, TTFT ${record.ttft_ms} ms, ${record.target_passes_per_token} target passes/token, mean accepted ${record.mean_accepted}`);
      records.push(record);
    }
  }
  return records;
}

async function streamOnce(edgeUrl: string, body: Record<string, unknown>): Promise<Run> {
  const started = performance.now();
  const response = await fetch(`${edgeUrl}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ...body, stream: true }),
  });
  if (!response.ok || !response.body) throw new Error(`completion failed: ${response.status} ${await response.text()}`);
  let ttftMs = 0;
  let buffered = '';
  let last: any = null;
  const decoder = new TextDecoder();
  for await (const piece of response.body) {
    buffered += decoder.decode(piece as Uint8Array, { stream: true });
    let end: number;
    while ((end = buffered.indexOf('\n\n')) >= 0) {
      const data = buffered.slice(0, end).replace(/^data: ?/, '');
      buffered = buffered.slice(end + 2);
      if (data === '[DONE]') continue;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(`stream error: ${chunk.error.message}`);
      if (!ttftMs && chunk.choices?.[0]?.text) ttftMs = performance.now() - started;
      last = chunk;
    }
  }
  const wallMs = performance.now() - started;
  const s = last.speculation;
  return { tokens: last.usage.completion_tokens, wallMs, ttftMs: ttftMs || wallMs, rounds: s.rounds, drafted: s.drafted, accepted: s.accepted, draftMs: s.draft_ms };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const round = (v: number) => Math.round(v * 100) / 100;
