import type { CausalLM, ForwardResult, KvCache } from '../../shared/model';
import { DraftModelProposer } from '../proposers/draft-model';

/**
 * A drafted token end to end, and the work around the model step alone
 * (BENCHMARKS.md: Draft speed and vocabulary trimming). Used by the test
 * Worker's /internal/bench/draft route (workerd) and bench/draft-speed.ts
 * (Node runtimes); free of workerd-only imports so Node can load it.
 */
export interface ProposalProfile {
  /** One `steps`-token proposal through DraftModelProposer after the prompt is cached, every cost included. */
  propose_ms: number;
  /** Tokens that proposal drafted (fewer than steps only with min_confidence). */
  drafted: number;
  /** The proposer's work around the step per drafted token: the proposal replayed over recorded logits, no model step. */
  around_ms_per_token: number;
}

/**
 * Time a proposal end to end, then its around-the-step work alone. Shared by
 * the route above (workerd) and bench/draft-speed.ts (Node runtimes).
 */
export async function profileProposal(
  lm: CausalLM,
  prompt: number[],
  steps: number,
  profile: { temperature: number; top_p: number; top_k: number; q_entries: number; min_confidence?: number },
): Promise<ProposalProfile> {
  const sampling = { temperature: profile.temperature, top_p: profile.top_p, top_k: profile.top_k, seed: 1, offset: prompt.length };
  const options = { minConfidence: profile.min_confidence ?? 0 };
  const recorded: ForwardResult[] = [];
  const recording = Object.create(lm) as CausalLM;
  recording.forward = async (tokens: readonly number[], cache: KvCache) => {
    const out = await lm.forward(tokens, cache);
    recorded.push({ ...out, logits: out.logits.slice((out.rows - 1) * lm.logitsWidth), rows: 1 });
    return out;
  };
  // The prompt is in the draft's KV first (syncKv, untimed), as in a generation after its first round: the
  // proposal then reruns the last context token and drafts, one position per step.
  const proposer = new DraftModelProposer(lm, profile.q_entries);
  await proposer.syncKv(prompt);
  const started = performance.now();
  const draft = await proposer.propose(prompt, steps, sampling, options);
  const proposeMs = performance.now() - started;
  const recorder = new DraftModelProposer(recording, profile.q_entries);
  await recorder.syncKv(prompt);
  recorded.length = 0;
  await recorder.propose(prompt, steps, sampling, options);
  // Replay: forward hands back the recorded logits at once, with a cache that only counts positions.
  let at = 0;
  const replay = Object.create(lm) as CausalLM;
  replay.forward = async (tokens: readonly number[], cache: KvCache) => {
    const out = recorded[at++ % recorded.length];
    return { logits: out.logits, rows: 1, cache: { ...cache, length: cache.length + tokens.length } };
  };
  let repeats = 0;
  const replayStarted = performance.now();
  do {
    at = 0;
    await new DraftModelProposer(replay, profile.q_entries).propose(prompt, steps, sampling, options);
    repeats++;
  } while (performance.now() - replayStarted < 200 && repeats < 10_000);
  const aroundMs = (performance.now() - replayStarted) / repeats / Math.max(1, draft.length);
  return { propose_ms: proposeMs, drafted: draft.length, around_ms_per_token: aroundMs };
}
