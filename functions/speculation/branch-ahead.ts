import type { WireSampling } from '../../shared/protocol';
import type { DraftToken } from '../../shared/sampling';
import { yieldToIo, type DraftConfidence, type Proposer } from '../proposers/types';

/**
 * Branch-ahead drafting (Mirror-SD): while a verify call is on the wire, the
 * Worker would otherwise sit idle. It drafts the next block for the verdicts
 * most likely to come back, so that when one of them does, the next round is
 * sent at once, without drafting:
 *
 * - **all accepted**: every draft accepted and the target's bonus token equal
 *   to the draft's own most likely next token;
 * - **correction**: the draft rejected at its least confident position, and
 *   the target's correction equal to the draft's second choice there.
 *
 * A branch is used only when the verdict emitted exactly its assumed tokens,
 * so the next round's context is the one it was drafted for, and its draft is
 * what drafting after the verdict would have produced (the same proposer, the
 * same context, the position's own draft draws). Verification is unchanged,
 * so branch-ahead changes only when drafts are computed, never the output.
 */

/** A next block drafted for one possible verdict. */
export interface Branch {
  /** What the verdict must emit for this branch to apply: accepted drafts, then the target's own token. */
  emitted: number[];
  draft: DraftToken[];
  /** The proposer (a hybrid's member) that drafted it, and its confidences (the next branches are guessed from them). */
  source: string;
  confidence: readonly DraftConfidence[] | undefined;
}

export interface BranchQuestion {
  proposer: Proposer;
  /** The context the in-flight block was drafted from. */
  context: readonly number[];
  /** The in-flight block's drafts, and the draft's confidence in each (absent: a match drafted it). */
  draft: readonly DraftToken[];
  confidence: readonly DraftConfidence[] | undefined;
  /** Generated tokens before the in-flight block (its RNG position). */
  position: number;
  /** The request's sampling without the per-round offset; offsets are `offsetBase + position`. */
  sampling: Omit<WireSampling, 'offset'>;
  offsetBase: number;
  /** Drafts per branch: the next round's k. */
  draftLength: number;
  minConfidence: number;
  stopTokenIds: ReadonlySet<number>;
  /** The most tokens the generation may still hold after the in-flight block's context (max_tokens, positions). */
  room: number;
  /** True once the verdict is in: drafting stops at the next step boundary. */
  arrived: () => boolean;
}

/**
 * The branches for the in-flight block, most likely first, drafted until the
 * verdict arrives. Drafting yields to the event loop between steps
 * (`yieldToIo`) so the verdict is seen as soon as it lands.
 */
export async function draftBranches(question: BranchQuestion): Promise<Branch[]> {
  const { proposer, context, draft } = question;
  const branches: Branch[] = [];
  if (draft.length === 0) return branches;
  const tokens = draft.map((d) => d.token);
  const guesses: number[][] = [];
  // The all-accepted branch needs the bonus guessed: the draft's most likely token after its own drafts
  // (unless the generation has no room for a block after it).
  if (question.room - tokens.length - 2 > 0) {
    await yieldToIo();
    if (question.arrived()) return branches;
    const bonus = await proposer.propose([...context, ...tokens], 1, { ...question.sampling, temperature: 0, offset: question.offsetBase + question.position + tokens.length });
    if (bonus.length === 1) guesses.push([...tokens, bonus[0].token]);
  }
  const weakest = leastConfident(question.confidence);
  if (weakest !== null) guesses.push([...tokens.slice(0, weakest.index), weakest.runnerUp]);

  for (const emitted of guesses) {
    await yieldToIo();
    if (question.arrived()) break;
    // A branch that ends the generation needs no next block.
    if (emitted.some((t) => question.stopTokenIds.has(t))) continue;
    const k = Math.min(question.draftLength, question.room - emitted.length - 1);
    if (k <= 0) continue;
    const branchDraft = await proposer.propose([...context, ...emitted], k, { ...question.sampling, offset: question.offsetBase + question.position + emitted.length }, {
      minConfidence: question.minConfidence,
      maxMatchTokens: k,
      confidence: true,
      interrupted: question.arrived,
    });
    if (branchDraft.length > 0) branches.push({ emitted, draft: branchDraft, source: proposer.lastSource ?? proposer.name, confidence: proposer.lastConfidence });
  }
  return branches;
}

/** The branch whose assumed verdict is exactly what the round emitted, if any. */
export function branchFor(branches: readonly Branch[], emitted: readonly number[]): Branch | null {
  return branches.find((b) => b.emitted.length === emitted.length && b.emitted.every((t, i) => t === emitted[i])) ?? null;
}

/** The position the target most likely rejects: the draft's least confident one (the first, on a tie). */
function leastConfident(confidence: readonly DraftConfidence[] | undefined): { index: number; runnerUp: number } | null {
  if (!confidence?.length) return null;
  let index = 0;
  for (let i = 1; i < confidence.length; i++) if (confidence[i].top < confidence[index].top) index = i;
  return { index, runnerUp: confidence[index].runnerUp };
}
