import { describe, expect, it } from 'vitest';
import { SuffixIndex, SuffixIndexRegistry, SuffixProposer, SUFFIX_DEFAULTS } from '../../functions/proposers/suffix';
import { counterRng } from '../../shared/sampling';

const sampling = { temperature: 0, top_p: 1, top_k: 0, seed: 0, offset: 0 };
const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);
const draft = async (proposer: SuffixProposer, context: number[], k = 4, maxMatchTokens?: number) =>
  (await proposer.propose(context, k, sampling, { maxMatchTokens })).map((d) => d.token);

describe('suffix proposer: the request itself', () => {
  it('drafts what followed the tail earlier in the context, deterministically (no q)', async () => {
    const proposer = new SuffixProposer(null);
    const context = [...range(1, 10), 50, ...range(1, 5)];
    expect(await draft(proposer, context)).toEqual([5, 6, 7, 8]);
    expect((await proposer.propose(context, 4, { ...sampling, temperature: 1 })).every((d) => d.q === undefined)).toBe(true);
  });

  it('the most frequent continuation wins, with its frequency as support', () => {
    // [7, 8, 9] was followed by 1 twice and by 2 once.
    const context = [7, 8, 9, 1, 40, 7, 8, 9, 2, 41, 7, 8, 9, 1, 42, 7, 8, 9];
    const match = new SuffixProposer(null).match(context, 4)!;
    expect(match.tokens[0]).toBe(1);
    expect(match.support).toEqual({ agree: 2, total: 3 });
    // Path probability 2/3 for 1, then 1/2 · 2/3 for 42 (tied with 40: the most recent occurrence wins), then
    // that occurrence alone (runs on into the tail itself: 7, 8). SuffixDecoding's score: their sum.
    expect(match.tokens).toEqual([1, 42, 7, 8]);
    expect(match.expectedAccepted).toBeCloseTo(2 / 3 + 3 * (1 / 3));
  });

  it('stops extending once the path probability falls below minProbability', () => {
    const context = [7, 8, 9, 1, 40, 7, 8, 9, 2, 41, 7, 8, 9, 3, 42, 7, 8, 9];
    // Three different continuations: 1/3 each, above 0.2; then each continues alone (1/3 · 1).
    expect(new SuffixProposer(null, { ...SUFFIX_DEFAULTS, minProbability: 0.2 }).match(context, 8)!.tokens.length).toBeGreaterThan(0);
    expect(new SuffixProposer(null, { ...SUFFIX_DEFAULTS, minProbability: 0.4 }).match(context, 8)).toBeNull();
  });

  it('no draft for a tail shorter than minMatch tokens, and at most maxMatchTokens', async () => {
    const proposer = new SuffixProposer(null);
    expect(await draft(proposer, [1, 2, 30, 1, 2])).toEqual([]);
    const long = [...range(1, 40), ...range(1, 4)];
    expect(await draft(proposer, long, 4)).toEqual([4, 5, 6, 7]);
    expect(await draft(proposer, long, 4, 12)).toEqual(range(4, 16));
  });
});

describe('suffix proposer: the tenant index', () => {
  it("drafts from the tenant's earlier outputs", async () => {
    const index = new SuffixIndex(1 << 20);
    index.add([...range(200, 230)]);
    expect(await draft(new SuffixProposer(index), [5, 6, 210, 211, 212], 4)).toEqual([213, 214, 215, 216]);
    // No match spans two outputs: the boundary stops it.
    index.add([300, 301, 302]);
    expect(await draft(new SuffixProposer(index), [227, 228, 229], 4)).toEqual([]);
    expect(await draft(new SuffixProposer(index), [300, 301, 302], 4)).toEqual([]);
  });

  it("never drafts one tenant's text for another", async () => {
    const registry = new SuffixIndexRegistry(1 << 20, 8 << 20);
    const secret = range(1000, 1040);
    registry.record('salt-a', secret);
    registry.record('salt-b', range(2000, 2040));
    const context = [1, 2, 1010, 1011, 1012];
    expect(await draft(new SuffixProposer(registry.get('salt-a')), context)).toEqual([1013, 1014, 1015, 1016]);
    for (const other of ['salt-b', 'salt-c']) {
      const drafted = await draft(new SuffixProposer(registry.get(other)), context, 4, 64);
      expect(drafted.filter((t) => secret.includes(t))).toEqual([]);
    }
    expect(registry.get('salt-c')).toBeNull();
  });

  it('finds exactly the occurrences a brute-force scan of the outputs finds', () => {
    const rng = counterRng(11);
    const index = new SuffixIndex(64 << 20);
    const docs: number[][] = [];
    for (let doc = 0; doc < 300; doc++) {
      const tokens = Array.from({ length: 20 + (doc % 50) }, (_, i) => Math.floor(rng.uniform(doc * 1000 + i, 'sample') * 8));
      index.add(tokens);
      docs.push(tokens);
    }
    let compared = 0;
    for (let q = 0; q < 50; q++) {
      const tail = Array.from({ length: 6 }, (_, i) => Math.floor(rng.uniform(1e7 + q * 10 + i, 'sample') * 8));
      // Brute force: every position in every output where the tail's last n = 3 tokens end, with its match length (≤ 6).
      const expected: number[] = [];
      for (const doc of docs) {
        for (let end = 2; end < doc.length; end++) {
          let length = 0;
          while (length < 6 && end - length >= 0 && doc[end - length] === tail[5 - length]) length++;
          if (length >= 3) expected.push(length);
        }
      }
      const found = index.occurrences(tail, 6);
      expect(found.length).toBe(Math.min(expected.length, 64));
      if (expected.length <= 64) expect(found.map((o) => o.length).sort()).toEqual(expected.sort());
      for (const o of found) for (let j = 0; j < o.length; j++) expect(index.at(o.end - j)).toBe(tail[5 - j]);
      compared += found.length;
    }
    expect(compared).toBeGreaterThan(100);
  });

  it('stays within its byte bound over a long run; the oldest outputs leave, the newest stay findable', () => {
    const rng = counterRng(5);
    const maxBytes = 256 << 10;
    const index = new SuffixIndex(maxBytes);
    const first = range(3000, 3050);
    index.add(first);
    let last: number[] = [];
    for (let doc = 0; doc < 3000; doc++) {
      last = Array.from({ length: 100 + (doc % 200) }, (_, i) => Math.floor(rng.uniform(doc * 1000 + i, 'sample') * 4096));
      index.add(last);
      expect(index.bytes()).toBeLessThanOrEqual(maxBytes);
    }
    const size = index.size();
    // The estimate counts what is really held: keys ≤ live tokens, entries ≤ live tokens.
    expect(size.keys).toBeLessThanOrEqual(size.tokens);
    expect(size.entries).toBeLessThanOrEqual(size.tokens);
    expect(size.tokens).toBeGreaterThan(1000);
    expect(index.occurrences(first.slice(0, 10), 10)).toEqual([]);
    expect(index.occurrences(last.slice(0, 10), 10).length).toBeGreaterThan(0);
  });

  it('the isolate registry stays within its total, dropping the least recently used tenant first', () => {
    const registry = new SuffixIndexRegistry(64 << 10, 256 << 10);
    const rng = counterRng(9);
    for (let t = 0; t < 40; t++) {
      for (let doc = 0; doc < 20; doc++) registry.record(`salt-${t}`, Array.from({ length: 300 }, (_, i) => Math.floor(rng.uniform(t * 1e6 + doc * 1000 + i, 'sample') * 4096)));
      // Tenant 0 stays in use.
      registry.get('salt-0');
      expect(registry.bytes()).toBeLessThanOrEqual(256 << 10);
    }
    expect(registry.get('salt-0')).not.toBeNull();
    expect(registry.get('salt-1')).toBeNull();
    expect(registry.get('salt-39')).not.toBeNull();
  });
});
