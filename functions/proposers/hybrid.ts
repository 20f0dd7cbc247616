import type { WireSampling } from '../../shared/protocol';
import { isGreedy, type DraftToken } from '../../shared/sampling';
import { matchDraft, matchLimit, type Match, type Matcher, type ProposalOutcome, type ProposeOptions, type Proposer } from './types';

/** Per observed round, every record keeps this much of its past. */
const DECAY = 0.875;
/** A match must be expected to get at least this share of the fallback's accepted drafts per round. */
const MODEL_SHARE = 0.5;

/** When a member's match wins the round. */
export interface HybridMember {
  matcher: Matcher;
  /** The match must cover at least this many tokens of the context's tail… */
  minMatchLength: number;
  /** …and be expected (by its own frequencies) to get at least this many drafts accepted. */
  minExpectedAccepted: number;
  /**
   * Whether it may draft sampled requests too. A deterministic draft is
   * accepted with probability p(x) (q = δ), so under sampling a match's
   * frequencies overstate it: on held-out code at temperature 0.8, suffix
   * matches got 0.5 drafts accepted per round where the draft model, whose
   * q follows p, got 1.8 (README: Proposers and Predicted Outputs).
   */
  sampled: boolean;
}

/**
 * Chooses a proposer per round: the first member whose match is long and
 * frequent enough drafts it (no model step, up to `maxMatchTokens`, which may
 * exceed k), else the fallback (the draft model) drafts k. The choice is a
 * function of the context and of earlier rounds' verdicts only, never of this
 * round's random draws, so verification stays lossless whichever wins.
 *
 * A member whose drafts keep being rejected in this generation is asked for
 * stronger evidence (its expected accepted length is scaled by its observed
 * acceptance, and must reach a share of what the draft model gets accepted),
 * so a misleading match source costs few rounds.
 */
export class HybridProposer implements Proposer {
  readonly name = 'hybrid';
  lastSource: string;
  /** The fallback's confidences when it drafted the last proposal; none for a match. */
  lastConfidence?: Proposer['lastConfidence'];
  /** Per source (members and the fallback): decayed accepted, drafted and round counts in this generation. */
  private readonly record = new Map<string, { accepted: number; drafted: number; rounds: number }>();
  draftKv?: Proposer['draftKv'];
  syncKv?: Proposer['syncKv'];
  extendBranch?: Proposer['extendBranch'];

  constructor(
    private readonly members: HybridMember[],
    private readonly fallback: Proposer,
  ) {
    this.lastSource = fallback.name;
    if (fallback.draftKv) this.draftKv = () => fallback.draftKv!();
    if (fallback.syncKv) this.syncKv = (context) => fallback.syncKv!(context);
    // Branches leave a draft-model proposal (the loop branches only those), so the fallback continues them.
    if (fallback.extendBranch) this.extendBranch = (...args) => fallback.extendBranch!(...args);
  }

  async propose(context: readonly number[], maxTokens: number, sampling: WireSampling, options: ProposeOptions = {}): Promise<DraftToken[]> {
    const limit = matchLimit(maxTokens, options);
    const greedy = isGreedy(sampling);
    for (const member of this.members) {
      if (!greedy && !member.sampled) continue;
      const found = member.matcher.match(context, limit);
      if (found && this.wins(member, found)) {
        this.lastSource = member.matcher.name;
        this.lastConfidence = undefined;
        return matchDraft(found);
      }
    }
    const draft = await this.fallback.propose(context, maxTokens, sampling, options);
    this.lastSource = this.fallback.lastSource ?? this.fallback.name;
    this.lastConfidence = this.fallback.lastConfidence;
    return draft;
  }

  observe(outcome: ProposalOutcome): void {
    // Every round ages every record (the last ~8 rounds matter), so a member that lost its trust is tried again later.
    for (const r of this.record.values()) {
      r.accepted *= DECAY;
      r.drafted *= DECAY;
      r.rounds *= DECAY;
    }
    const r = this.record.get(outcome.source) ?? { accepted: 0, drafted: 0, rounds: 0 };
    r.accepted += outcome.accepted;
    r.drafted += outcome.drafted;
    r.rounds += 1;
    this.record.set(outcome.source, r);
    this.fallback.observe?.(outcome);
  }

  /**
   * A match wins when the drafts it is expected to get accepted (its own
   * estimate, scaled by how its member's drafts fared in this generation)
   * reach the member's floor and MODEL_SHARE of what the fallback's rounds
   * got accepted: a match round spends no model step, so it may win with less.
   */
  private wins(member: HybridMember, found: Match): boolean {
    if (found.tokens.length === 0 || found.matchLength < member.minMatchLength) return false;
    const own = this.record.get(member.matcher.name);
    const acceptance = own ? (own.accepted + 1) / (own.drafted + 1) : 1;
    const model = this.record.get(this.fallback.lastSource ?? this.fallback.name);
    const modelPerRound = model && model.rounds > 0.5 ? model.accepted / model.rounds : 0;
    return found.expectedAccepted * acceptance >= Math.max(member.minExpectedAccepted, MODEL_SHARE * modelPerRound);
  }
}
