import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { startEdge, startOrigin, type EdgeService, type Service } from '../scripts/stack';
import { heldOutPrompts } from '../test/support/prompts';
import type { BenchRecord } from './records';
import { postJson, sseData, type EdgeTarget } from './sse';

/**
 * Origin failover under load: two signed reference origins behind one edge,
 * `streams` concurrent streaming clients issuing greedy completions back to
 * back, and one origin killed (SIGKILL) halfway through. Counts failed
 * requests (non-200, an error chunk, or no [DONE]) and greedy outputs that
 * differ from the same prompt's output elsewhere in the run, and reports
 * aggregate tokens/s before and after the kill.
 *
 * `npm run bench -- --only failover`, or on its own:
 * `tsx bench/failover.ts [--quick] [--port-base 21793]` (prints the records).
 */
export interface FailoverOptions {
  targetDir: string;
  draftDir: string;
  quick: boolean;
  log: (line: string) => void;
  /** Origins on portBase and portBase + 1, the edge on portBase + 2. */
  portBase?: number;
  streams?: number;
}

interface Completed {
  prompt: number;
  started: number;
  ended: number;
  tokens: number[];
  /** Arrival time of each streamed token (ms since the run began). */
  arrivals: number[];
  ok: boolean;
  error: string | null;
  origin: string | null;
  rounds: number;
}

export async function failoverSuite(options: FailoverOptions): Promise<BenchRecord[]> {
  const { log } = options;
  const portBase = options.portBase ?? 21793;
  const streams = options.streams ?? 16;
  const durationMs = options.quick ? 24_000 : 60_000;
  const maxTokens = options.quick ? 32 : 64;
  const secret = randomBytes(32).toString('hex');
  const prompts = heldOutPrompts(options.quick ? 8 : 24, 300);

  const start = (i: number) => startOrigin({ port: portBase + i, id: `failover-${'ab'[i]}`, targetDir: options.targetDir, secret, log });
  const origins: Service[] = await Promise.all([start(0), start(1)]);
  let edge: EdgeService | undefined;
  try {
    edge = await startEdge({
      port: portBase + 2,
      originUrl: origins[0].url,
      draftDir: options.draftDir,
      persistTo: `.wrangler/bench-failover-${portBase + 2}`,
      secret,
      vars: { ORIGINS: JSON.stringify(origins.map((o, i) => ({ id: `failover-${'ab'[i]}`, url: o.url }))) },
      log,
    });
    const target: EdgeTarget = edge;
    // Warm both origins and the edge's draft session before the clock starts.
    await Promise.all(prompts.slice(0, 4).map((prompt) => streamCompletion(target, prompt, 8, 0, performance.now())));

    const t0 = performance.now();
    const killAt = durationMs / 2;
    const done: Completed[] = [];
    let next = 0;
    const worker = async () => {
      while (performance.now() - t0 < durationMs) {
        const prompt = next++ % prompts.length;
        done.push({ prompt, ...(await streamCompletion(target, prompts[prompt], maxTokens, t0, t0)) });
      }
    };
    log(`failover: ${streams} streams for ${durationMs / 1000} s, ${maxTokens} tokens per request; killing failover-a at ${killAt / 1000} s`);
    const killer = new Promise<void>((resolve) =>
      setTimeout(() => {
        origins[0].process.kill('SIGKILL');
        log('failover: killed failover-a (SIGKILL)');
        resolve();
      }, killAt),
    );
    await Promise.all([...Array.from({ length: streams }, worker), killer]);

    // Greedy output per prompt must be one and the same across the run, failover or not.
    const outputs = new Map<number, string>();
    let mismatched = 0;
    for (const r of done.filter((r) => r.ok)) {
      const key = r.tokens.join(',');
      const seen = outputs.get(r.prompt);
      if (seen === undefined) outputs.set(r.prompt, key);
      else if (seen !== key) mismatched++;
    }
    const failed = done.filter((r) => !r.ok);
    const spanning = done.filter((r) => r.started < killAt && r.ended > killAt);
    const failedOver = spanning.filter((r) => r.origin?.includes(','));
    for (const f of failed.slice(0, 5)) log(`failover: failed request: ${f.error}`);

    const windowRecord = (mode: string, from: number, to: number): BenchRecord => {
      const tokens = done.reduce((n, r) => n + r.arrivals.filter((t) => t >= from && t < to).length, 0);
      const finished = done.filter((r) => r.ended >= from && r.ended < to && r.ok);
      const emitted = finished.reduce((n, r) => n + r.tokens.length, 0);
      const rounds = finished.reduce((n, r) => n + r.rounds, 0);
      return {
        suite: 'failover',
        mode,
        rtt_ms: 0,
        tokens_per_s: round((tokens / (to - from)) * 1000),
        ttft_ms: 0,
        target_passes_per_token: emitted ? round(rounds / emitted) : 0,
        mean_accepted: rounds ? round(emitted / rounds) : 0,
        draft_ms_per_token: 0,
        origin_cost: 'measured',
        streams,
        origins: mode === 'before-kill' ? 2 : 1,
        window_s: round((to - from) / 1000),
        requests: done.length,
        failed_requests: failed.length,
        mismatched_outputs: mismatched,
        requests_spanning_kill: spanning.length,
        failed_over: failedOver.length,
      };
    };
    // Skip the first seconds (ramp-up) and the last (workers draining).
    const records = [windowRecord('before-kill', Math.min(3000, killAt / 4), killAt), windowRecord('after-kill', killAt, durationMs)];
    for (const r of records) {
      log(`failover ${r.mode}: ${r.tokens_per_s} tok/s over ${r.window_s} s; requests ${r.requests}, failed ${r.failed_requests}, mismatched ${r.mismatched_outputs}, spanning the kill ${r.requests_spanning_kill} (failed over ${r.failed_over})`);
    }
    return records;
  } finally {
    await edge?.stop();
    await Promise.all(origins.map((o) => o.stop()));
  }
}

async function streamCompletion(edge: EdgeTarget, prompt: string, maxTokens: number, t0: number, started: number): Promise<Omit<Completed, 'prompt'>> {
  const base = { started: started - t0, tokens: [] as number[], arrivals: [] as number[], origin: null as string | null, rounds: 0 };
  let response: Response;
  try {
    response = await postJson(edge, '/v1/completions', { prompt, max_tokens: maxTokens, temperature: 0, stream: true, return_token_ids: true });
  } catch (err) {
    return { ...base, started: started - t0, ended: performance.now() - t0, ok: false, error: (err as Error).message };
  }
  const startedAt = performance.now() - t0;
  if (response.status !== 200 || !response.body) {
    return { ...base, started: startedAt, ended: performance.now() - t0, ok: false, error: `HTTP ${response.status}: ${(await response.text()).slice(0, 300)}` };
  }
  const result = { ...base, started: startedAt, ended: 0, ok: false, error: null as string | null };
  let sawDone = false;
  for await (const data of sseData(response.body)) {
    if (data === '[DONE]') {
      sawDone = true;
      continue;
    }
    const chunk = JSON.parse(data);
    if (chunk.error) {
      result.error = chunk.error.message;
      continue;
    }
    const ids: number[] = chunk.choices?.[0]?.token_ids ?? [];
    const at = performance.now() - t0;
    for (const id of ids) {
      result.tokens.push(id);
      result.arrivals.push(at);
    }
    if (chunk.speculation) {
      result.origin = chunk.speculation.origin;
      result.rounds = chunk.speculation.rounds;
    }
  }
  result.ended = performance.now() - t0;
  result.ok = sawDone && result.error === null;
  if (!sawDone && !result.error) result.error = 'stream ended without [DONE]';
  return result;
}

const round = (v: number) => Math.round(v * 100) / 100;

// Standalone: `tsx bench/failover.ts [--quick] [--port-base N]`.
if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({ options: { quick: { type: 'boolean', default: false }, 'port-base': { type: 'string', default: '21793' } } });
  const records = await failoverSuite({
    targetDir: process.env.EDGESPEC_TARGET_DIR ?? 'models/edgespec-target',
    draftDir: process.env.EDGESPEC_DRAFT_DIR ?? 'models/edgespec-draft',
    quick: values.quick!,
    portBase: Number(values['port-base']),
    log: (line) => console.log(`[bench] ${line}`),
  });
  console.log(JSON.stringify(records, null, 2));
}
