import { beforeAll, describe, expect, it } from 'vitest';
import { StopMatcher } from '../../functions/openai/stop';
import { IncrementalDecoder, type TextTokenizer } from '../../shared/tokenizer';
import { DRAFT_DIR, loadFolderTokenizer } from '../support/models';

let tokenizer: TextTokenizer;
beforeAll(async () => {
  tokenizer = await loadFolderTokenizer(DRAFT_DIR);
});

describe('tokenizer wrapper and incremental decoding', () => {
  it('decodes no tokens to the empty string', () => {
    expect(tokenizer.decode([])).toBe('');
    expect(new IncrementalDecoder(tokenizer).flush()).toBe('');
  });

  it('streams exactly the text of the whole decode, never half a character', () => {
    const text = 'const s = "héllo → wörld 🎉";\n';
    const ids = tokenizer.encode(text);
    const decoder = new IncrementalDecoder(tokenizer);
    const pieces = ids.map((id) => decoder.push([id]));
    pieces.push(decoder.flush());
    expect(pieces.join('')).toBe(text);
    for (const piece of pieces) expect(piece).not.toContain('\uFFFD');
  });
});

describe('StopMatcher', () => {
  it('cuts before a stop string split across chunks and holds back possible prefixes', () => {
    const stop = new StopMatcher(['END']);
    expect(stop.push('abc E')).toBe('abc ');
    expect(stop.push('N')).toBe('');
    expect(stop.push('Dxyz')).toBe('');
    expect(stop.hasStopped).toBe(true);
    expect(stop.flush()).toBe('');
  });

  it('releases held text that turned out not to be a stop string', () => {
    const stop = new StopMatcher(['END']);
    expect(stop.push('E')).toBe('');
    expect(stop.push('x')).toBe('Ex');
    expect(stop.push('EN')).toBe('');
    expect(stop.flush()).toBe('EN');
    expect(stop.hasStopped).toBe(false);
  });

  it('stops at the earliest of several stop strings', () => {
    const stop = new StopMatcher(['\n\n', '}']);
    expect(stop.push('a }\n\nb')).toBe('a ');
  });
});
