import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ModelFiles } from './load';

/** A model folder on the local file system (origin, tests, benchmarks). Node only: never imported by the edge. */
export function folderFiles(dir: string): ModelFiles {
  return { read: (path) => readFile(join(dir, path)).then((b) => new Uint8Array(b), () => null) };
}
