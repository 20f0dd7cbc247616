import type { DraftToken } from '../../shared/sampling';
import { matchDraft, matchLimit, type Match, type Matcher, type ProposeOptions } from './types';

/**
 * Re-alignment after the output left the prediction: the generated tail must
 * match at least this many prediction tokens (2 are ambiguous in code:
 * `, ` or `) {` occur everywhere) and at most this many are compared.
 */
export const REALIGN_MIN = 3;
export const REALIGN_MAX = 32;
/** Candidate positions examined per re-alignment on each side of the last aligned position: bounds the work on repetitive predictions. */
const REALIGN_CANDIDATES = 128;

/**
 * The user's predicted output (OpenAI's Predicted Outputs) as a deterministic
 * draft (q = δ). The prediction is the expected output: while the generated
 * text follows it, the draft is the prediction's next tokens (up to
 * `maxMatchTokens`). After a rejection the output has left it; it is
 * re-aligned where the generated tail matches the prediction again (the
 * longest suffix of the output, REALIGN_MIN..REALIGN_MAX tokens, that occurs
 * in the prediction, nearest after where the output left it), and drafting
 * continues after that. Until then it has no draft (a hybrid drafts with the
 * model meanwhile).
 */
export class PredictionProposer implements Matcher {
  readonly name = 'prediction';
  private readonly aligner: PredictionAligner;

  constructor(
    readonly prediction: readonly number[],
    private readonly promptLength: number,
  ) {
    this.aligner = new PredictionAligner(prediction);
  }

  match(context: readonly number[], limit: number): Match | null {
    const at = this.aligner.sync(context.slice(this.promptLength));
    if (!at || at.cursor >= this.prediction.length || limit <= 0) return null;
    const tokens = this.prediction.slice(at.cursor, at.cursor + limit);
    return { tokens, matchLength: at.matchLength, expectedAccepted: tokens.length, support: { agree: 1, total: 1 } };
  }

  async propose(context: readonly number[], maxTokens: number, _sampling: unknown, options: ProposeOptions = {}): Promise<DraftToken[]> {
    return matchDraft(this.match(context, matchLimit(maxTokens, options)));
  }
}

/** Where the output stands in the prediction after some output tokens. */
interface AlignState {
  /** Prediction index the next output token is expected at; -1 = not aligned. */
  cursor: number;
  /** Output tokens matched in a row behind the cursor (Infinity: aligned from the start). */
  matchLength: number;
  /** The last aligned cursor: re-alignment prefers the nearest occurrence after it. */
  anchor: number;
}

/**
 * Walks the output against the prediction token by token (the rule above),
 * incrementally: `sync` with the output so far reuses every state up to the
 * longest common prefix with the previous call, so pipelined blocks that
 * were rolled back cost nothing extra.
 */
export class PredictionAligner {
  private readonly positions = new Map<number, number[]>();
  private output: number[] = [];
  /** states[i]: after output[0..i). */
  private states: AlignState[] = [{ cursor: 0, matchLength: Infinity, anchor: 0 }];

  constructor(private readonly prediction: readonly number[]) {
    for (const [i, token] of prediction.entries()) {
      let list = this.positions.get(token);
      if (!list) this.positions.set(token, (list = []));
      list.push(i);
    }
  }

  sync(output: readonly number[]): { cursor: number; matchLength: number } | null {
    let shared = 0;
    const limit = Math.min(output.length, this.output.length);
    while (shared < limit && output[shared] === this.output[shared]) shared++;
    this.output.length = shared;
    this.states.length = shared + 1;
    for (let i = shared; i < output.length; i++) {
      this.output.push(output[i]);
      this.states.push(this.step(this.states[i]).state);
    }
    const state = this.states[output.length];
    return state.cursor < 0 ? null : { cursor: state.cursor, matchLength: state.matchLength };
  }

  /**
   * The state after the last pushed output token, from the state before it;
   * `appeared` is the span of prediction indices [from, to) now known to be in
   * the output (the token itself in sync, or the whole re-aligned match).
   */
  step(before: AlignState): { state: AlignState; appeared: [number, number] | null } {
    const i = this.output.length - 1;
    const token = this.output[i];
    const { cursor } = before;
    if (cursor >= 0 && cursor < this.prediction.length && this.prediction[cursor] === token) {
      return { state: { cursor: cursor + 1, matchLength: before.matchLength + 1, anchor: cursor + 1 }, appeared: [cursor, cursor + 1] };
    }
    const found = this.realign(i, before.anchor);
    if (!found) return { state: { cursor: -1, matchLength: 0, anchor: before.anchor }, appeared: null };
    return { state: { cursor: found.end + 1, matchLength: found.length, anchor: found.end + 1 }, appeared: [found.end + 1 - found.length, found.end + 1] };
  }

  /** The longest suffix of output[0..i] (REALIGN_MIN..REALIGN_MAX tokens) in the prediction; ties: nearest at or after `anchor`, else nearest before. */
  private realign(i: number, anchor: number): { end: number; length: number } | null {
    const list = this.positions.get(this.output[i]);
    if (!list || i + 1 < REALIGN_MIN) return null;
    let best: { end: number; length: number } | null = null;
    const consider = (end: number) => {
      let length = 1;
      while (length < REALIGN_MAX && i - length >= 0 && end - length >= 0 && this.output[i - length] === this.prediction[end - length]) length++;
      if (length >= REALIGN_MIN && (!best || length > best.length)) best = { end, length };
    };
    // The first candidate ending at or after the anchor's previous token (binary search), then outwards.
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (list[mid] < anchor - 1) lo = mid + 1;
      else hi = mid;
    }
    for (let j = lo; j < list.length && j < lo + REALIGN_CANDIDATES; j++) consider(list[j]);
    for (let j = lo - 1; j >= 0 && j >= lo - REALIGN_CANDIDATES; j--) consider(list[j]);
    return best;
  }

  /** Pushes one output token (for a one-pass walk, `predictionUsage`). */
  push(token: number, before: AlignState) {
    this.output.push(token);
    return this.step(before);
  }

  static start(): AlignState {
    return { cursor: 0, matchLength: Infinity, anchor: 0 };
  }
}

/**
 * OpenAI's `accepted_prediction_tokens` / `rejected_prediction_tokens` for
 * one output: accepted = prediction tokens that appeared in the output, as
 * the proposer aligns them (in order, each counted once: the tokens the
 * output followed, plus the spans it re-aligned on), whichever proposer or
 * the target produced them; rejected = the other prediction tokens
 * (accepted + rejected = the prediction's length).
 */
export function predictionUsage(prediction: readonly number[], output: readonly number[]): { accepted: number; rejected: number } {
  const aligner = new PredictionAligner(prediction);
  const appeared = new Uint8Array(prediction.length);
  let state = PredictionAligner.start();
  for (const token of output) {
    const step = aligner.push(token, state);
    state = step.state;
    if (step.appeared) appeared.fill(1, step.appeared[0], step.appeared[1]);
  }
  let accepted = 0;
  for (const flag of appeared) accepted += flag;
  return { accepted, rejected: prediction.length - accepted };
}
