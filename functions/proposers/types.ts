import type { DraftToken } from '../../shared/sampling';
import type { WireSampling } from '../../shared/protocol';

/**
 * One way of drafting (STYLE: vLLM's proposer interface). Given the context so
 * far, propose up to `maxTokens` draft tokens; the verifier never needs to
 * know where they came from. A proposer instance lives for one generation, so
 * it may keep state (a KV cache) between rounds.
 */
export interface Proposer {
  readonly name: string;
  propose(context: readonly number[], maxTokens: number, sampling: WireSampling): Promise<DraftToken[]>;
}
