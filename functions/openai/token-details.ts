import type { WireTokenLogprob } from '../../shared/protocol';
import type { TextTokenizer } from '../../shared/tokenizer';
import type { GenerationRecord, RecordedRound, TokenSource } from '../speculation/record';

/**
 * The per-token parts of a response, read from the generation's record
 * (functions/speculation/record.ts) where the writer last stopped: the opt-in
 * `speculation.record` (each token's text and source, each round's timing)
 * and OpenAI's `logprobs`. Streamed, each chunk carries what is new;
 * non-streamed, one read takes everything.
 */
export interface TokenDetail {
  id: number;
  /** The text this token completes: bytes of a character split across tokens arrive with its last token, so the texts concatenate to the output. */
  text: string;
  source: TokenSource;
  round: number;
  /** Characters of the output before this token (completions' `text_offset`). */
  offset: number;
  logprob?: WireTokenLogprob | null;
}

export interface DetailsDelta {
  tokens: TokenDetail[];
  /** Rounds with their index and the text of the drafts the target rejected (what the draft wanted instead of the correction). */
  rounds: Array<RecordedRound & { index: number; rejected_text: string }>;
}

export class TokenDetailsReader {
  private tokensRead = 0;
  private roundsRead = 0;
  private offset = 0;
  private readonly utf8 = new TextDecoder('utf-8');

  constructor(
    private readonly record: GenerationRecord,
    private readonly tokenizer: TextTokenizer,
  ) {}

  /** Everything recorded since the last read. */
  read(): DetailsDelta {
    const tokens = this.record.tokens.slice(this.tokensRead).map((t) => {
      const text = this.utf8.decode(this.tokenizer.tokenBytes(t.id), { stream: true });
      const detail: TokenDetail = { ...t, text, offset: this.offset };
      this.offset += text.length;
      return detail;
    });
    const rounds = this.record.rounds.slice(this.roundsRead).map((r, i) => ({ index: this.roundsRead + i, ...r, rejected_text: this.tokenizer.decode(r.drafted.slice(r.accepted)) }));
    this.tokensRead += tokens.length;
    this.roundsRead += rounds.length;
    return { tokens, rounds };
  }

  /** A token's own text for logprobs: its bytes decoded alone (a partial character shows as U+FFFD; `bytes` has it exactly). */
  tokenText(id: number): { token: string; bytes: number[] } {
    const bytes = this.tokenizer.tokenBytes(id);
    return { token: new TextDecoder('utf-8').decode(bytes), bytes: [...bytes] };
  }
}

/** `speculation.record` as sent: rounds with their timing, tokens with their text and source. */
export function recordJson(delta: DetailsDelta) {
  return {
    tokens: delta.tokens.map(({ id, text, source, round }) => ({ id, text, source, round })),
    rounds: delta.rounds,
  };
}

/** Legacy completions' `logprobs`: parallel lists; top_logprobs maps each alternative's text to its logprob. */
export function completionLogprobs(tokens: readonly TokenDetail[], reader: TokenDetailsReader) {
  return {
    tokens: tokens.map((t) => reader.tokenText(t.id).token),
    token_logprobs: tokens.map((t) => t.logprob?.logprob ?? null),
    top_logprobs: tokens.map((t) => (t.logprob ? Object.fromEntries(t.logprob.top.map(([id, logprob]) => [reader.tokenText(id).token, logprob])) : null)),
    text_offset: tokens.map((t) => t.offset),
  };
}

/** Chat's `logprobs`: one entry per token with its bytes and its alternatives. */
export function chatLogprobs(tokens: readonly TokenDetail[], reader: TokenDetailsReader) {
  return {
    content: tokens.map((t) => ({
      ...reader.tokenText(t.id),
      logprob: t.logprob?.logprob ?? null,
      top_logprobs: (t.logprob?.top ?? []).map(([id, logprob]) => ({ ...reader.tokenText(id), logprob })),
    })),
    refusal: null,
  };
}
