import type { TokenSource, WireTokenLogprob } from '../../shared/protocol';
import { DRAFT_MODEL } from '../proposers/draft-model';
import { DRAFT_ONLY_ID } from '../upstream/draft-only';

/**
 * What happened to every emitted token, in order: the response's opt-in
 * `speculation.record` (README: Seeing speculation) and the source of
 * `logprobs`. The decoding loop appends one round at a time; writers read it
 * from where they last stopped.
 *
 * A verify round of k drafted tokens with a accepted emits the a accepted
 * drafts (source: who drafted them), then the target's own token: a
 * `target-correction` when a draft was rejected (a < k), a `bonus` when all
 * were accepted. A pipelined round fully accepted with a successor in flight
 * emits no target token (the successor decides that position). Tokens of
 * origin-only decoding are `origin`, one per round; tokens the draft model
 * produced alone because no origin could serve are `draft-only`.
 */
export type { TokenSource };

export interface RecordedToken {
  id: number;
  source: TokenSource;
  /** Index into `rounds`. */
  round: number;
  /** Present when the request asked for logprobs; null where no target scored it (draft-only fallback). */
  logprob?: WireTokenLogprob | null;
}

export interface RecordedRound {
  /** verify: drafts checked by one target pass; origin: one token the origin decoded alone. */
  kind: 'verify' | 'origin';
  /** Who drafted (draft-model, prompt-lookup, suffix, prediction), null for origin rounds. */
  proposer: string | null;
  /** The drafted token ids; those after `accepted` were rejected. */
  drafted: number[];
  accepted: number;
  /** Tokens this round emitted. */
  emitted: number;
  /** Edge time drafting, the verify call's wall time (link + queue + forward), and the target's forward time. */
  draft_ms: number;
  verify_ms: number;
  forward_ms: number;
}

/** Accepted drafts are named by who drafted them: prompt lookup is vLLM's "ngram". */
const ACCEPTED_SOURCE: Record<string, TokenSource> = { [DRAFT_MODEL]: 'draft-accepted', 'prompt-lookup': 'ngram', suffix: 'suffix', prediction: 'prediction' };

export class GenerationRecord {
  readonly tokens: RecordedToken[] = [];
  readonly rounds: RecordedRound[] = [];

  /**
   * @param wantLogprobs whether tokens carry `logprob` (the request asked for logprobs)
   * @param drafting whether the draft fallback has taken over (functions/upstream/draft-only.ts): origin-stream tokens are then the draft's
   */
  constructor(
    readonly wantLogprobs = false,
    private readonly drafting: () => boolean = () => false,
  ) {}

  /** A verify round: `emitted` are its tokens after any cut (stop token, max_tokens); `logprobs` aligned with them when asked for. */
  verifyRound(
    round: Omit<RecordedRound, 'kind' | 'emitted'>,
    emitted: readonly number[],
    logprobs: readonly WireTokenLogprob[] | undefined,
    originId: string,
  ): void {
    const index = this.rounds.push({ kind: 'verify', ...round, emitted: emitted.length }) - 1;
    const fallback = originId === DRAFT_ONLY_ID;
    emitted.forEach((id, i) => {
      const source: TokenSource = fallback
        ? 'draft-only'
        : i < round.accepted
          ? (ACCEPTED_SOURCE[round.proposer ?? ''] ?? 'draft-accepted')
          : round.accepted < round.drafted.length
            ? 'target-correction'
            : 'bonus';
      this.tokens.push({ id, source, round: index, ...(this.wantLogprobs ? { logprob: logprobs?.[i] ?? null } : {}) });
    });
  }

  /**
   * One token of the origin's stream: decoded alone (`origin`), or, when the
   * origin speculates, with the source it reports (its rounds are the
   * origin's own; here each token is one entry of the stream).
   */
  originToken(id: number, wallMs: number, forwardMs: number, logprob: WireTokenLogprob | undefined, source: TokenSource = 'origin'): void {
    const index = this.rounds.push({ kind: 'origin', proposer: null, drafted: [], accepted: 0, emitted: 1, draft_ms: 0, verify_ms: wallMs, forward_ms: forwardMs }) - 1;
    this.tokens.push({ id, source: this.drafting() ? 'draft-only' : source, round: index, ...(this.wantLogprobs ? { logprob: logprob ?? null } : {}) });
  }
}
