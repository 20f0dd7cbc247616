/**
 * One tenant's recent outputs as the SuffixHistory Durable Object stores them
 * (./durable-object.ts): token id arrays, numbered in the order they arrived
 * (newest last), bounded in bytes with the oldest leaving first. Written
 * against the synchronous key-value API of a SQLite-backed object
 * (`ctx.storage.kv`), so the rules are tested in Node on a Map.
 */

/** What the log needs of `ctx.storage.kv`. */
export interface SyncKv {
  get<T = unknown>(key: string): T | undefined;
  put<T>(key: string, value: T): void;
  delete(key: string): boolean;
}

/** Outputs newer than the caller's `after`, each with its number (sequence numbers are never reused). */
export interface HistoryPage {
  outputs: Array<{ seq: number; tokens: number[] }>;
  /** The number the next output will get: the caller has seen everything below it. */
  next: number;
}

interface Meta {
  /** Oldest output still held. */
  first: number;
  next: number;
  bytes: number;
}

/**
 * What one output counts against the bound: 4 bytes per token id (an Int32,
 * as the in-memory index holds them) plus a fixed overhead, so many tiny
 * outputs are bounded too.
 */
export const TOKEN_BYTES = 4;
export const OUTPUT_OVERHEAD_BYTES = 32;
/**
 * Each tenant's bound: 128 KiB, about 32,000 token ids. The in-memory index
 * this history hydrates (functions/proposers/suffix.ts, TENANT_SUFFIX_BYTES =
 * 2 MiB: per token an 8-byte ring slot, an index entry and its share of the
 * n-gram keys) held 26,000-29,000 tokens of this repository's own TypeScript
 * (shipped tokenizer, measured in Node): indexing 32,768 tokens took 8 ms and
 * kept 28,800, indexing 65,536 took 49 ms and kept 26,600. Storing more would
 * only be fetched, indexed and evicted again by every hydration.
 */
export const TENANT_HISTORY_BYTES = 128 * 2 ** 10;

/** Token ids fit the in-memory index's Int32Array ring (functions/proposers/suffix.ts). */
export const MAX_TOKEN_ID = 2 ** 31 - 1;

export function outputBytes(length: number): number {
  return length * TOKEN_BYTES + OUTPUT_OVERHEAD_BYTES;
}

/** The longest output a log of `maxBytes` keeps whole (a caller sends only an output's last this many tokens). */
export function maxOutputTokens(maxBytes: number): number {
  return Math.max(0, Math.floor((maxBytes - OUTPUT_OVERHEAD_BYTES) / TOKEN_BYTES));
}

/**
 * The output as a plain array of token ids, or a TypeError: only the Worker
 * can reach the object, but whatever it is handed is checked anyway (an array
 * of integers in [0, MAX_TOKEN_ID], at most `maxTokens` long).
 */
export function validOutput(tokens: unknown, maxTokens: number): number[] {
  if (!Array.isArray(tokens)) throw new TypeError('suffix history: an output must be an array of token ids');
  if (tokens.length > maxTokens) throw new TypeError(`suffix history: an output holds at most ${maxTokens} tokens (got ${tokens.length})`);
  const out = new Array<number>(tokens.length);
  for (let i = 0; i < tokens.length; i++) {
    const id = tokens[i];
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id > MAX_TOKEN_ID) throw new TypeError(`suffix history: token ${i} is not a token id (${String(id)})`);
    out[i] = id;
  }
  return out;
}

const META = 'meta';
const outputKey = (seq: number) => `out:${seq}`;

export class OutputLog {
  readonly maxOutputTokens: number;

  constructor(
    private readonly kv: SyncKv,
    readonly maxBytes: number,
  ) {
    this.maxOutputTokens = maxOutputTokens(maxBytes);
    if (this.maxOutputTokens < 1) throw new RangeError(`suffix history: a bound of ${maxBytes} bytes holds no output`);
  }

  private meta(): Meta {
    return this.kv.get<Meta>(META) ?? { first: 0, next: 0, bytes: 0 };
  }

  /** Keeps one output (newest), then drops the oldest until the bound holds; its number, or -1 for an empty output (not kept). */
  append(tokens: unknown): number {
    const output = validOutput(tokens, this.maxOutputTokens);
    if (output.length === 0) return -1;
    const meta = this.meta();
    const seq = meta.next;
    this.kv.put(outputKey(seq), output);
    meta.next = seq + 1;
    meta.bytes += outputBytes(output.length);
    // One output alone fits (maxOutputTokens), so the newest always stays.
    while (meta.bytes > this.maxBytes && meta.first < seq) {
      const oldest = this.kv.get<number[]>(outputKey(meta.first));
      if (oldest) {
        meta.bytes -= outputBytes(oldest.length);
        this.kv.delete(outputKey(meta.first));
      }
      meta.first++;
    }
    this.kv.put(META, meta);
    return seq;
  }

  /** The outputs numbered after `after` (-1 = all), oldest first. */
  recent(after: unknown = -1): HistoryPage {
    if (typeof after !== 'number' || !Number.isInteger(after) || after < -1) throw new TypeError('suffix history: `after` must be an integer ≥ -1');
    const meta = this.meta();
    const outputs: HistoryPage['outputs'] = [];
    for (let seq = Math.max(meta.first, after + 1); seq < meta.next; seq++) {
      const tokens = this.kv.get<number[]>(outputKey(seq));
      if (tokens) outputs.push({ seq, tokens });
    }
    return { outputs, next: meta.next };
  }

  /** Outputs and bytes held now (tests). */
  stats(): { outputs: number; bytes: number; first: number; next: number } {
    const meta = this.meta();
    return { outputs: meta.next - meta.first, ...meta };
  }
}
