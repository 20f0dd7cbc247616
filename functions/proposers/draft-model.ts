import type { CausalLM, KvCache } from '../../shared/model';
import { logitsRow, truncateKvCache } from '../../shared/model';
import { argmax, branchRng, isGreedy, roundRng, sampleFrom, sparseFromLogits, type DraftToken } from '../../shared/sampling';
import type { WireSampling } from '../../shared/protocol';
import { yieldToIo, type DraftConfidence, type ProposeOptions, type Proposer } from './types';

export const DRAFT_MODEL = 'draft-model';

/**
 * Drafts with a small causal LM. Greedy requests get deterministic proposals
 * (the draft's argmax; only ids cross the wire). Sampled requests draw from
 * the draft's processed distribution cut to its `qEntries` most likely tokens
 * and renormalised, so q is exactly the short list that is sent
 * (ARCHITECTURE.md: Speculative decoding, exactly, "q on the wire").
 *
 * The KV cache persists across rounds: after verification only the tokens the
 * draft has not seen (the target's correction or bonus, and whatever followed a
 * rejection) are run again, in one forward pass however many there are: when
 * another proposer (a match, a prediction) drafted the rounds in between,
 * the context has advanced by many tokens the draft never saw, and it
 * catches up in one step. It may start from a prefix restored from the
 * prefix cache (functions/prefix-cache), and hands its KV back for storing.
 *
 * A trimmed-vocabulary draft (models/README.md: Trimmed drafts) gives logits
 * over its kept tokens only: argmax, q and the confidence are computed over
 * those columns and mapped back to full token ids (the kept ids ascend, so
 * ties still go to the lower token id). q is over kept ids; the target
 * verifies every token, so this stays lossless.
 */
export class DraftModelProposer implements Proposer {
  readonly name = DRAFT_MODEL;
  private cache: KvCache;
  /** The tokens the cache holds, position by position. */
  private cachedTokens: number[] = [];
  lastConfidence?: DraftConfidence[];
  /** The softmax weights of one step, reused step after step (no per-token allocation of the vocabulary's width). */
  private readonly scratch: Float64Array;

  constructor(
    private readonly lm: CausalLM,
    private readonly qEntries: number,
    start?: { tokens: readonly number[]; cache: KvCache } | null,
  ) {
    this.cache = start?.cache ?? lm.emptyCache();
    if (start) this.cachedTokens = start.tokens.slice(0, this.cache.length);
    this.scratch = new Float64Array(lm.logitsWidth);
  }

  draftKv() {
    return { tokens: this.cachedTokens, cache: this.cache };
  }

  async propose(context: readonly number[], maxTokens: number, sampling: WireSampling, options: ProposeOptions = {}): Promise<DraftToken[]> {
    const room = this.lm.config.maxPositions - context.length;
    const k = Math.min(maxTokens, room);
    if (k <= 0) return [];
    this.rewindTo(context);
    // The same per-round generator the origin verifies with (shared/sampling/README.md).
    const rng = roundRng(sampling.seed, sampling.offset);
    const width = this.lm.logitsWidth;
    const draft: DraftToken[] = [];
    const confidence: DraftConfidence[] | undefined = options.confidence ? [] : undefined;
    this.lastConfidence = confidence;
    let pending = context.slice(this.cache.length);
    for (let i = 0; i < k; i++) {
      if (i > 0 && options.interrupted) {
        await yieldToIo();
        if (options.interrupted()) break;
      }
      const result = await this.lm.forward(pending, this.cache);
      this.cache = result.cache;
      this.cachedTokens.push(...pending);
      const logits = logitsRow(result, result.rows - 1, width);
      // Early stop is a function of the draft's own state only, so verification stays lossless.
      // The top probability is computed once a step (one exp per logit), for the stop and the confidence.
      const top = (i > 0 && options.minConfidence) || (confidence && isGreedy(sampling)) ? topProbability(logits) : 0;
      if (i > 0 && options.minConfidence && top < options.minConfidence) break;
      const [proposal, column] = this.pick(logits, sampling, rng.uniform(sampling.offset + i, 'draft'));
      draft.push(proposal);
      confidence?.push(this.confidenceOf(logits, proposal, column, top));
      pending = [proposal.token];
    }
    return draft;
  }

  async extendBranch(context: readonly number[], prefix: readonly number[], steps: number, sampling: WireSampling, row: number): Promise<DraftToken[]> {
    // The cache holds the proposal's path up to its last token; a branch leaves it before `prefix`'s last token.
    const held = context.length + prefix.length - 1;
    for (let i = 0; i < held; i++) {
      const want = i < context.length ? context[i] : prefix[i - context.length];
      if (this.cachedTokens[i] !== want) throw new Error(`extendBranch: the draft does not hold the path this branch leaves (position ${i})`);
    }
    // Forward passes return new KV; truncating to a prefix copies nothing the proposer's own cache still needs.
    let cache = truncateKvCache(this.cache, held);
    const rng = branchRng(sampling.seed, sampling.offset, row);
    const room = this.lm.config.maxPositions - held - 1;
    const branch: DraftToken[] = [];
    let token = prefix[prefix.length - 1];
    for (let s = 0; s < Math.min(steps, room); s++) {
      const result = await this.lm.forward([token], cache);
      cache = result.cache;
      // The drafted position's index within the round: the branch's first token sat at prefix.length − 1.
      const [proposal] = this.pick(logitsRow(result, 0, this.lm.logitsWidth), sampling, rng.uniform(sampling.offset + prefix.length + s, 'draft'));
      branch.push(proposal);
      token = proposal.token;
    }
    return branch;
  }

  async syncKv(context: readonly number[]): Promise<void> {
    this.rewindTo(context, context.length);
    const pending = context.slice(this.cache.length);
    if (pending.length === 0) return;
    this.cache = (await this.lm.forward(pending, this.cache)).cache;
    this.cachedTokens.push(...pending);
  }

  /** The proposal (full token ids) and its logit column. */
  private pick(logits: Float32Array, sampling: WireSampling, u: number): [DraftToken, number] {
    if (isGreedy(sampling)) {
      const column = argmax(logits);
      return [{ token: this.lm.tokenAt(column) }, column];
    }
    // = truncateToSparse(processLogits(logits, sampling), qEntries), without the dense vectors.
    const q = sparseFromLogits(logits, sampling, this.qEntries, this.scratch);
    const entry = sampleFrom(
      q.map(([, prob]) => prob),
      u,
    );
    const column = q[entry][0];
    if (this.lm.tokenIds) for (const pair of q) pair[0] = this.lm.tokenAt(pair[0]);
    return [{ token: q[entry][0], q }, column];
  }

  /** How sure the draft was of `proposal`, and its best other token: from q when sampled (q is what it drew from), else the logits. */
  private confidenceOf(logits: Float32Array, proposal: DraftToken, column: number, top: number): DraftConfidence {
    if (proposal.q) {
      let best = 0;
      let runnerUp = -1;
      let runnerUpProb = -1;
      for (const [id, prob] of proposal.q) {
        best = Math.max(best, prob);
        if (id !== proposal.token && prob > runnerUpProb) [runnerUp, runnerUpProb] = [id, prob];
      }
      // q of one entry: the logits name the runner-up.
      return { top: best, runnerUp: runnerUp >= 0 ? runnerUp : this.lm.tokenAt(secondArgmax(logits, column)) };
    }
    return { top, runnerUp: this.lm.tokenAt(secondArgmax(logits, column)) };
  }

  /** Keep the cached prefix shared with `context`, but (to propose) never all of it: the last context token must run to give logits. */
  private rewindTo(context: readonly number[], keepAtMost = context.length - 1) {
    const limit = Math.min(this.cachedTokens.length, keepAtMost);
    let shared = 0;
    while (shared < limit && this.cachedTokens[shared] === context[shared]) shared++;
    this.cache = truncateKvCache(this.cache, shared);
    this.cachedTokens.length = shared;
  }
}

/** The index of the largest logit other than `excluded`. */
function secondArgmax(logits: Float32Array, excluded: number): number {
  let best = excluded === 0 ? 1 : 0;
  for (let i = 0; i < logits.length; i++) if (i !== excluded && logits[i] > logits[best]) best = i;
  return best;
}

/** The largest softmax probability of `logits` (temperature 1): the draft's confidence in its next token. */
export function topProbability(logits: Float32Array): number {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - max);
  return 1 / sum;
}
