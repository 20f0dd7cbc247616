import { IncrementalDecoder, type TextTokenizer } from '../../shared/tokenizer';
import { StopMatcher } from '../openai/stop';
import type { FinishReason } from '../speculation/loop';
import type { Generation } from './index';

/**
 * A generation as text: each round's text delta (never half a character,
 * never a stop string or the start of one that may still complete) and its
 * token ids, appended to `generatedIds` as they arrive. Returns why the
 * generation ended. Every response writer (completions, chat, jobs) reads
 * generations through this.
 */
export async function* textRounds(
  generation: Pick<Generation, 'rounds' | 'first'>,
  tokenizer: TextTokenizer,
  stop: readonly string[],
  generatedIds: number[],
): AsyncGenerator<{ text: string; ids: number[] }, FinishReason> {
  const { rounds, first } = generation;
  const decoder = new IncrementalDecoder(tokenizer);
  const stopper = new StopMatcher([...stop]);
  for (let next = first; ; next = await rounds.next()) {
    if (next.done) {
      yield { text: stopper.push(decoder.flush()) + stopper.flush(), ids: [] };
      return next.value;
    }
    generatedIds.push(...next.value);
    yield { text: stopper.push(decoder.push(next.value)), ids: next.value };
    if (stopper.hasStopped) return 'stop';
  }
}
