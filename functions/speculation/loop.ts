import { ApiError } from '../../shared/errors';
import { MAX_DRAFT_BRANCHES, type OriginSpeculation, type VerifyResponse, type WireSampling } from '../../shared/protocol';
import { isGreedy, type DraftToken } from '../../shared/sampling';
import type { OriginClient } from '../upstream/client';
import type { Proposer } from '../proposers';
import { MATCH_DRAFT_FACTOR, MAX_VERIFY_DRAFT } from '../proposers/kinds';
import { DRAFT_MODEL } from '../proposers/draft-model';
import { branchFor, draftBranches, type Branch } from './branch-ahead';
import { DelayAdaptiveController, isolateLink, type LinkEstimator } from './controller';
import { choosePlacement } from './placement';
import type { GenerationRecord } from './record';
import type { SpeculationStats } from './stats';
import { draftAlternatives, extendAlternatives } from './draft-tree';

export interface GenerationInput {
  prompt: readonly number[];
  maxTokens: number;
  /** Sampling for the whole generation; `offset` is filled per round. */
  sampling: Omit<WireSampling, 'offset'>;
  /** Tokens that end generation (end-of-text); emitted, then generation stops. */
  stopTokenIds: ReadonlySet<number>;
  /** Smallest context of draft and target: no position may pass it. */
  maxPositions: number;
  /** Ask the origin for each emitted token's log-probability and this many alternatives (shared/sampling/logprobs.ts). */
  logprobs?: number;
  /** Where each round and emitted token is written down (./record.ts), when someone reads it. */
  record?: GenerationRecord;
  /**
   * RNG position of the first token generated here (default 0): tokens that
   * were generated before `prompt` ends. An origin speculating for a stream
   * resumed after `offset` tokens draws exactly where the edge would have.
   */
  offset?: number;
  /** The caller's predicted output from the generation's start: sent along when drafting happens at the origin. */
  prediction?: readonly number[];
}

export type FinishReason = 'stop' | 'length';

/** How a generation speculates: the request's `speculation` object over the configured defaults. */
export type SpeculationMode = 'origin' | 'lockstep' | 'pipelined' | 'adaptive' | 'branch-ahead';

/**
 * Where drafts are made: in the Worker (the proposers here, a verify round trip
 * per round), or at the origin (`speculate` on its generate stream: the same
 * loop next to the target, one stream back, no round trip per round).
 */
export type DraftPlacement = 'edge' | 'origin';

/** A plan's placement: fixed, or `auto`: chosen per request from the isolate's measurements (./placement.ts). */
export type PlacementRequest = DraftPlacement | 'auto';

export interface SpeculationPlan {
  mode: SpeculationMode;
  method: 'token' | 'block';
  /** Draft tokens per round (lockstep, pipelined), or the most the controller may choose (adaptive). */
  draftLength: number;
  /** Verify requests in flight at once (pipelined); lockstep and adaptive keep one. */
  depth: number;
  /** Early stop below this draft top probability (ProposeOptions.minConfidence); 0 = off. */
  minConfidence: number;
  /**
   * Lockstep and pipelined: the most tokens a draft that costs no model step
   * (a match, a prediction) may grow to (ProposeOptions.maxMatchTokens), ≥
   * draftLength, ≤ the verify protocol's 64. Absent = draftLength. Adaptive
   * bounds every draft by the k it chose.
   */
  maxMatchDraft?: number;
  /**
   * Multi-path drafts: alternatives beside each draft-model path, one verify round
   * one tree (./draft-tree.ts); lockstep-like rounds only (depth 1). 0 or absent = one path.
   */
  branches?: number;
  /** Multi-path drafts: tokens per alternative, continued by the draft on its own row (./draft-tree.ts); default 1. */
  branchLength?: number;
  /** Default 'edge'. */
  placement?: PlacementRequest;
  /**
   * The origins can draft (their /health names a `draft`): an adaptive hand-over
   * then continues with speculation at the origin instead of its plain decoding.
   */
  originDrafts?: boolean;
  /** What the origin drafts with when drafting happens there (OriginSpeculation.proposer); default its hybrid. */
  originProposer?: 'hybrid' | 'draft-model';
}

/** Wall clock in ms. Local workerd runs it during computation; deployed Workers advance it only across I/O, so there draft time folds into the next verify call. */
const now = () => performance.now();

/**
 * One generation: origin-only decoding, or speculation in one of its modes.
 * Yields the tokens of each round; returns why generation ended.
 */
export function decode(
  input: GenerationInput,
  plan: SpeculationPlan,
  proposer: () => Proposer,
  origin: OriginClient,
  stats: SpeculationStats,
  signal?: AbortSignal,
  link: LinkEstimator = isolateLink,
): AsyncGenerator<number[], FinishReason> {
  plan = resolvePlacement(plan, input, stats, link);
  if (plan.mode === 'origin' || plan.draftLength === 0) return originDecode(input, origin, stats, signal, [], link);
  if (plan.placement === 'origin') return originDecode(input, origin, stats, signal, [], link, originSpeculation(plan, input));
  const greedy = input.sampling.temperature === 0;
  const controller = plan.mode === 'adaptive' ? new DelayAdaptiveController(link, { maxDraftLength: plan.draftLength, greedy, originDrafts: plan.originDrafts ?? false }) : null;
  return speculate(input, plan, proposer(), origin, stats, controller, signal, link);
}

/**
 * Placement `auto` made concrete from the isolate's measurements (./placement.ts):
 * drafting at the edge (the plan as it is), at the origin (with the k it chose),
 * or nowhere (origin-only decoding). Other plans come back unchanged. The
 * generation calls it before restoring draft KV, which only edge drafting uses.
 */
export function resolvePlacement(plan: SpeculationPlan, input: GenerationInput, stats: SpeculationStats, link: LinkEstimator = isolateLink): SpeculationPlan {
  if (plan.placement !== 'auto' || plan.mode === 'origin' || plan.draftLength === 0) return plan;
  const choice = choosePlacement(link, {
    greedy: input.sampling.temperature === 0,
    maxDraftLength: plan.draftLength,
    remaining: input.maxTokens,
    originDrafts: plan.originDrafts ?? false,
    edgeDrafts: true,
  });
  stats.placement = choice.placement;
  stats.placementReason = choice.reason;
  if (choice.placement === 'none') return { ...plan, mode: 'origin', draftLength: 0, placement: 'edge' };
  if (choice.placement === 'origin') return { ...plan, placement: 'origin', draftLength: Math.max(1, Math.min(plan.draftLength, choice.draftLength)) };
  return { ...plan, placement: 'edge' };
}

/** A verify request on the wire: its drafts, and the answer to come. */
interface Block {
  context: number;
  offset: number;
  draft: DraftToken[];
  /** Multi-path drafts: alternative nodes sent beside `draft` (./draft-tree.ts). */
  alternatives: number;
  /** The proposer that drafted it (a hybrid's member): per-proposer stats and the hybrid's feedback. */
  source: string;
  draftMs: number;
  sentAt: number;
  verdict: Promise<VerifyResponse>;
  /** Aborts this block's verify call (its answer will not be used). */
  discard: AbortController;
  /** Branch-ahead: next blocks drafted while this one is on the wire, for the verdicts most likely to come back. */
  branches?: Promise<Branch[]>;
  /** Its drafts were a prepared branch: drafted during the previous round's wait. */
  fromBranch?: boolean;
}

/**
 * Speculative decoding (ARCHITECTURE.md: Speculative decoding, exactly), lockstep or
 * pipelined: propose k tokens at the edge, verify them at the origin in one
 * target pass, emit the accepted tokens plus the target's own next token.
 *
 * Pipelined (PipeSpec, AMUSD, PEARL): up to `depth` verify requests are in
 * flight; each later block is drafted on the assumption that every earlier
 * one is accepted in full, so its context is the earlier context plus the
 * earlier drafts. When a block is accepted in full and a later block is in
 * flight, that block's bonus token is dropped: the later block decides that
 * position instead, with its own fresh randomness (roundRng keyed by its
 * offset). Whether a successor exists is fixed before the verdict is read, so
 * dropping the bonus never depends on its value, and every emitted token is
 * still the outcome of a lossless verification given the tokens before it.
 * Any other verdict (a rejection, or a correction) discards every later block.
 *
 * Adaptive: depth 1, and before each round the controller picks k from
 * measured acceptance, draft time, link delay and verify time, or hands the
 * rest of the generation to the origin's own decoding (`originDecode` from the
 * current position, RNG offset = tokens generated so far), so no token is
 * lost or repeated.
 *
 * Branch-ahead (Mirror-SD; ./branch-ahead.ts): lockstep, and while a verify
 * call is on the wire the edge drafts the next block for the likeliest
 * verdicts; when the verdict is one of them, that block is sent at once.
 */
async function* speculate(
  input: GenerationInput,
  plan: SpeculationPlan,
  proposer: Proposer,
  origin: OriginClient,
  stats: SpeculationStats,
  controller: DelayAdaptiveController | null,
  signal: AbortSignal | undefined,
  link: LinkEstimator,
): AsyncGenerator<number[], FinishReason> {
  const generated: number[] = [];
  /** Drafted tokens of the blocks in flight, in order: the path later blocks assume. */
  let assumed: number[] = [];
  let inflight: Block[] = [];
  const depth = plan.mode === 'pipelined' ? Math.max(1, plan.depth) : 1;
  // Match drafts start at MATCH_DRAFT_FACTOR·k, double while they are accepted in full, and fall back on a
  // rejection (functions/proposers/kinds.ts): a right prediction soon drafts long, a wrong one costs short rounds.
  const maxMatch = Math.max(plan.draftLength, Math.min(plan.maxMatchDraft ?? plan.draftLength, MAX_VERIFY_DRAFT));
  const startMatch = Math.min(maxMatch, MATCH_DRAFT_FACTOR * plan.draftLength);
  let matchBudget = startMatch;
  const branchAhead = plan.mode === 'branch-ahead';
  // Trees in rounds that are alone on the wire: a pipelined successor assumes the draft path itself.
  const treeWidth = depth === 1 ? (plan.branches ?? 0) : 0;
  /** Branch-ahead: the next block, drafted while the last verdict was on the wire, when that verdict came back as guessed. */
  let prepared: Branch | null = null;
  try {
    while (generated.length < input.maxTokens) {
      // Fill the pipeline.
      while (inflight.length < depth) {
        const position = generated.length + assumed.length;
        const contextLength = input.prompt.length + position;
        if (assumed.some((t) => input.stopTokenIds.has(t))) break;
        if (contextLength >= input.maxPositions || position >= input.maxTokens) break;
        let k = plan.draftLength;
        if (controller && inflight.length === 0) {
          const next = controller.plan(input.maxTokens - generated.length);
          if (next.action === 'hand-over') {
            stats.handoverAt = generated.length;
            stats.handoverReason = next.reason;
            // To speculation at the origin when it can draft and the controller predicts it wins, else its plain decoding.
            const toOrigin = plan.originDrafts === true && next.to === 'origin';
            const originPlan = { ...plan, draftLength: next.draftLength > 0 ? next.draftLength : plan.draftLength };
            return yield* originDecode(input, origin, stats, signal, generated, link, toOrigin ? originSpeculation(originPlan, input) : undefined);
          }
          k = next.draftLength;
        }
        // A round emits up to k+1 tokens: leave room for the target's own one.
        const room = Math.min(input.maxTokens - position - 1, input.maxPositions - contextLength - 1);
        k = Math.max(0, Math.min(k, room));
        // A match draft costs no model step, so it may be longer (adaptive: the k it chose).
        const matchTokens = controller ? k : Math.max(k, Math.min(matchBudget, room));
        // A later block needs drafts of its own, or it would only repeat its predecessor's last position.
        if (inflight.length > 0 && k === 0) break;
        const context = [...input.prompt, ...generated, ...assumed];
        // The same per-round generator the origin verifies with (shared/sampling/README.md).
        const sampling = { ...input.sampling, offset: (input.offset ?? 0) + position };
        const draftStarted = now();
        const hit = prepared;
        prepared = null;
        // A prepared branch was drafted for exactly this context (branchFor matched the verdict); it is only cut to this round's room.
        const draft = hit ? hit.draft.slice(0, k) : k > 0 ? await proposer.propose(context, k, sampling, { minConfidence: plan.minConfidence, maxMatchTokens: matchTokens, confidence: branchAhead || (treeWidth > 0 && isGreedy(sampling)) }) : [];
        if (draft.length > matchTokens) throw new Error(`proposer ${proposer.name} drafted ${draft.length} tokens, more than the ${matchTokens} allowed`);
        const source = hit ? hit.source : (proposer.lastSource ?? proposer.name);
        const confidence = hit ? hit.confidence : proposer.lastConfidence;
        // Alternatives only beside a model's path: a match has no distribution to branch from.
        const firstTokens = treeWidth > 0 && source === DRAFT_MODEL ? draftAlternatives(draft, sampling, treeWidth, confidence) : [];
        const alternatives = firstTokens.length ? await extendAlternatives(proposer, context, draft, firstTokens, plan.branchLength ?? 1, sampling, MAX_DRAFT_BRANCHES) : firstTokens;
        const sentAt = now();
        signal?.throwIfAborted();
        const discard = new AbortController();
        const blockSignal = signal ? AbortSignal.any([signal, discard.signal]) : discard.signal;
        const verdict = origin.verify({ context, draft, ...(alternatives.length ? { branches: alternatives } : {}), sampling, method: plan.method, ...(input.logprobs !== undefined ? { logprobs: input.logprobs } : {}) }, blockSignal);
        // A discarded block's answer is never awaited: keep its failure from surfacing as unhandled.
        verdict.catch(() => {});
        const block: Block = { context: context.length, offset: position, draft, alternatives: alternatives.length, source, draftMs: sentAt - draftStarted, sentAt, verdict, discard, fromBranch: hit !== null };
        if (branchAhead && draft.length > 0) block.branches = branchesWhileWaiting(block, { proposer, context, draft, confidence, input, plan, signal, stats });
        inflight.push(block);
        stats.draftMs += sentAt - draftStarted;
        stats.drafted += draft.length;
        assumed.push(...draft.map((d) => d.token));
        if (draft.length === 0) break;
      }
      if (inflight.length === 0) return 'length';

      const block = inflight.shift()!;
      const verdict = await block.verdict;
      const verifyWallMs = now() - block.sentAt;
      // Drafting stops at its next step boundary once the verdict is in.
      const branches = block.branches ? await block.branches : [];
      stats.verifyMs += verifyWallMs;
      stats.rounds++;
      stats.accepted += verdict.accepted;
      if (block.alternatives > 0) {
        stats.tree.rounds++;
        stats.tree.branches += block.alternatives;
        if (verdict.path?.some((node) => node >= block.draft.length)) stats.tree.branchTaken++;
      }
      stats.originIds.add(verdict.origin.id);
      stats.originForwardMs += verdict.origin.forward_ms;
      const perProposer = (stats.proposers[block.source] ??= { rounds: 0, drafted: 0, accepted: 0 });
      perProposer.rounds++;
      perProposer.drafted += block.draft.length;
      perProposer.accepted += verdict.accepted;
      proposer.observe?.({ source: block.source, drafted: block.draft.length, accepted: verdict.accepted });
      if (block.source !== DRAFT_MODEL && block.draft.length > 0) {
        if (verdict.accepted < block.draft.length) matchBudget = startMatch;
        else if (block.draft.length >= matchBudget) matchBudget = Math.min(maxMatch, 2 * matchBudget);
      }
      const observation = {
        drafted: block.draft.length,
        accepted: verdict.accepted,
        draftMs: block.draftMs,
        verifyWallMs,
        forwardMs: verdict.origin.forward_ms,
        // The origin ran everything it did not hold: beyond the last context token, that is a prefill.
        prefillTokens: Math.max(0, block.context - verdict.origin.cached_tokens - 1),
        // A match or prediction says nothing about the draft model's acceptance or speed; nor does a block drafted while the previous verdict was on the wire (its draft cost no round time).
        modelDraft: block.source === DRAFT_MODEL && !block.fromBranch,
      };
      if (controller) controller.observe(observation);
      // Lockstep rounds measure the same link: the isolate learns from them too (pipelined wall times overlap, so not those).
      else if (depth === 1) link.observeRound(observation, input.sampling.temperature === 0);

      let tokens: number[];
      if (verdict.accepted === block.draft.length && inflight.length > 0) {
        // Fully accepted with a successor in flight: the successor decides the next position.
        tokens = verdict.tokens.slice(0, verdict.accepted);
        assumed = assumed.slice(block.draft.length);
      } else {
        tokens = verdict.tokens;
        stats.discardedRounds += inflight.length;
        // Their answers cannot be used: cancel the calls (an origin drops a pass that has not started).
        for (const discarded of inflight) discarded.discard.abort();
        inflight = [];
        assumed = [];
      }
      const { tokens: emitted, finish } = cutAtStop(tokens, input.stopTokenIds, input.maxTokens - generated.length);
      input.record?.verifyRound(
        { proposer: block.source, drafted: block.draft.map((d) => d.token), accepted: verdict.accepted, draft_ms: block.draftMs, verify_ms: verifyWallMs, forward_ms: verdict.origin.forward_ms },
        emitted,
        verdict.logprobs,
        verdict.origin.id,
      );
      generated.push(...emitted);
      if (block.branches && !finish) {
        prepared = branchFor(branches, emitted);
        stats.branchAhead.verdicts++;
        if (prepared) stats.branchAhead.hits++;
      }
      yield emitted;
      if (finish) return finish;
    }
    return 'length';
  } finally {
    // Ended early (stop string, client gone, error): answers still on the wire cost target passes too; cancel them.
    stats.discardedRounds += inflight.length;
    for (const discarded of inflight) discarded.discard.abort();
  }
}

/** Starts drafting `block`'s branches; they stop when its verdict (or its failure, or the client leaving) arrives. */
function branchesWhileWaiting(
  block: Block,
  at: { proposer: Proposer; context: number[]; draft: DraftToken[]; confidence: Proposer['lastConfidence']; input: GenerationInput; plan: SpeculationPlan; signal?: AbortSignal; stats: SpeculationStats },
): Promise<Branch[]> {
  let arrived = false;
  const settle = () => {
    arrived = true;
  };
  block.verdict.then(settle, settle);
  const { input } = at;
  const started = now();
  const branches = draftBranches({
    proposer: at.proposer,
    context: at.context,
    draft: at.draft,
    confidence: at.confidence,
    position: block.offset,
    sampling: input.sampling,
    offsetBase: input.offset ?? 0,
    draftLength: at.plan.draftLength,
    minConfidence: at.plan.minConfidence,
    stopTokenIds: input.stopTokenIds,
    room: Math.min(input.maxTokens - block.offset, input.maxPositions - at.context.length),
    arrived: () => arrived || at.signal?.aborted === true,
  }).then((found) => {
    at.stats.branchAhead.branches += found.length;
    at.stats.branchAhead.draftMs += now() - started;
    return found;
  });
  // Its outcome is read only when the verdict came; a failure there must not surface as unhandled.
  branches.catch(() => {});
  return branches;
}

/** What the origin is asked to speculate with: the plan's k and rule, and the caller's prediction. */
function originSpeculation(plan: SpeculationPlan, input: GenerationInput): OriginSpeculation {
  return {
    draft_length: Math.max(1, plan.draftLength),
    method: plan.method,
    ...(input.prediction?.length ? { prediction: [...input.prediction] } : {}),
    ...(plan.originProposer ? { proposer: plan.originProposer } : {}),
    ...(plan.mode === 'adaptive' ? { adaptive: true } : {}),
  };
}

/**
 * The origin's stream: origin-only decoding (the baseline, the path when
 * speculation is off (k = 0)), or with `speculate` the origin's own
 * speculation next to its target; and the adaptive mode's hand-over, which
 * continues after `generated` with the RNG offset at its length so a sampled
 * generation keeps its positions.
 */
export async function* originDecode(
  input: GenerationInput,
  origin: OriginClient,
  stats: SpeculationStats,
  signal?: AbortSignal,
  generated: readonly number[] = [],
  link: LinkEstimator = isolateLink,
  speculate?: OriginSpeculation,
): AsyncGenerator<number[], FinishReason> {
  const started = now();
  const context = [...input.prompt, ...generated];
  const maxTokens = Math.min(input.maxTokens - generated.length, input.maxPositions - context.length);
  if (maxTokens <= 0) return 'length';
  const events = origin.generate(
    {
      context,
      max_tokens: maxTokens,
      sampling: { ...input.sampling, offset: (input.offset ?? 0) + generated.length },
      stop_token_ids: [...input.stopTokenIds],
      ...(input.logprobs !== undefined ? { logprobs: input.logprobs } : {}),
      ...(speculate ? { speculate } : {}),
    },
    signal,
  );
  let first = true;
  let last = started;
  let speculatedTokens = 0;
  let firstSpeculatedAt: number | null = null;
  let lastSpeculatedAt = started;
  try {
    for await (const event of events) {
      if (event.type === 'token') {
        stats.originTokens++;
        stats.originForwardMs += event.forward_ms;
        if (event.source) {
          // Speculated at the origin: its rounds arrive with `done`; its token steps say nothing about one-token decoding.
          stats.originSpeculatedTokens++;
          speculatedTokens++;
          firstSpeculatedAt ??= now();
          lastSpeculatedAt = now();
        } else {
          stats.rounds++;
          // The first token carries the prefill and one link delay; later ones a one-token step.
          link.observeOriginToken(event.forward_ms, first ? now() - started : undefined);
        }
        first = false;
        const at = now();
        input.record?.originToken(event.token, at - last, event.forward_ms, event.logprob, event.source);
        last = at;
        yield [event.token];
      } else if (event.type === 'done') {
        stats.originIds.add(event.origin.id);
        if (event.speculation) {
          stats.rounds += event.speculation.rounds;
          stats.originSpeculation.rounds += event.speculation.rounds;
          stats.originSpeculation.drafted += event.speculation.drafted;
          stats.originSpeculation.accepted += event.speculation.accepted;
          stats.originSpeculation.draftMs += event.speculation.draft_ms;
          stats.originSpeculation.draftSteps += event.speculation.draft_steps ?? event.speculation.drafted;
          // What placement at the origin delivers per token, for the next request's choice (./placement.ts).
          link.observeOriginSpeculation({
            tokens: speculatedTokens,
            rounds: event.speculation.rounds,
            drafted: event.speculation.drafted,
            accepted: event.speculation.accepted,
            forwardMs: event.origin.forward_ms,
            draftMs: event.speculation.draft_ms,
            wallMs: now() - started,
            ...(firstSpeculatedAt !== null ? { firstTokenMs: firstSpeculatedAt - started, lastTokenMs: lastSpeculatedAt - started } : {}),
            greedy: input.sampling.temperature === 0,
          });
        }
        return event.finish_reason;
      } else {
        throw new ApiError(502, 'origin generation failed mid-stream', null, 'origin_error');
      }
    }
  } finally {
    stats.verifyMs += now() - started;
  }
  throw new ApiError(502, 'origin stream ended without a done event', null, 'origin_error');
}

function cutAtStop(tokens: number[], stopIds: ReadonlySet<number>, room: number): { tokens: number[]; finish: FinishReason | null } {
  const stopAt = tokens.findIndex((t) => stopIds.has(t));
  if (stopAt >= 0 && stopAt < room) return { tokens: tokens.slice(0, stopAt + 1), finish: 'stop' };
  if (tokens.length >= room) return { tokens: tokens.slice(0, room), finish: 'length' };
  return { tokens, finish: null };
}
