import { randomBytes } from 'node:crypto';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openModelsBucket, seedModels, uploadModels, verifiedModelFiles } from '../../scripts/models-upload';

/**
 * scripts/models-upload.ts against local R2 (wrangler's platform proxy, a
 * temporary persistence directory): checked against SHA256SUMS before anything
 * moves, resumable, verified after each file, multipart for large files. The
 * remote path is the same code with `remote: true` on the binding.
 */
let work: string;
let persistTo: string;
const lines: string[] = [];
const log = (line: string) => lines.push(line);

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'edgespec-models-test-'));
  persistTo = join(work, 'state');
});
afterAll(() => rm(work, { recursive: true, force: true }));

async function sha256sums(dir: string, files: string[]) {
  const { createHash } = await import('node:crypto');
  const rows = await Promise.all(files.map(async (f) => `${createHash('sha256').update(await readFile(join(dir, f))).digest('hex')}  ${f}`));
  await writeFile(join(dir, 'SHA256SUMS'), rows.join('\n') + '\n');
}

describe('models:upload', () => {
  it('the shipped folders match their SHA256SUMS', async () => {
    for (const dir of ['models/edgespec-draft', 'models/edgespec-target']) {
      const files = await verifiedModelFiles(dir);
      expect(files.map((f) => f.path)).toContain('config.json');
      expect(files.map((f) => f.path)).not.toContain('SHA256SUMS');
    }
  });

  it('refuses a folder that does not match, before uploading anything', async () => {
    const dir = join(work, 'edgespec-draft-bad');
    await cp('models/edgespec-draft', dir, { recursive: true });
    await writeFile(join(dir, 'config.json'), '{}');
    await writeFile(join(dir, 'stray.bin'), 'x');
    await expect(uploadModels({ remote: false, persistTo, modelDirs: [dir], log })).rejects.toThrow(/does not match its SHA256SUMS; nothing was uploaded:[\s\S]*config\.json: sha256[\s\S]*stray\.bin: not listed/);
    const { bucket, dispose } = await openModelsBucket({ remote: false, persistTo });
    try {
      expect((await bucket.list({ prefix: 'edgespec-draft-bad/' })).objects).toEqual([]);
    } finally {
      await dispose();
    }
    await rm(join(dir, 'SHA256SUMS'));
    await expect(uploadModels({ remote: false, persistTo, modelDirs: [dir] })).rejects.toThrow(/has no SHA256SUMS/);
  });

  it('uploads, verifies, skips what is there, and resumes an interrupted run', async () => {
    const [first] = await uploadModels({ remote: false, persistTo, modelDirs: ['models/edgespec-draft'], log });
    expect(first).toMatchObject({ folder: 'edgespec-draft', uploaded: 5, skipped: 0 });
    expect(lines.some((l) => /onnx\/model_quantized\.onnx\s+3\.57 MB\s+uploaded, verified/.test(l))).toBe(true);

    const { bucket, dispose } = await openModelsBucket({ remote: false, persistTo });
    try {
      const stored = await bucket.get('edgespec-draft/onnx/model_quantized.onnx');
      expect(Buffer.from(await stored!.arrayBuffer()).equals(await readFile('models/edgespec-draft/onnx/model_quantized.onnx'))).toBe(true);
      // An interrupted run: one file never arrived, another holds something else.
      await bucket.delete('edgespec-draft/tokenizer.json');
      await bucket.put('edgespec-draft/config.json', '{}', { customMetadata: { sha256: 'stale' } });
    } finally {
      await dispose();
    }
    lines.length = 0;
    const [again] = await uploadModels({ remote: false, persistTo, modelDirs: ['models/edgespec-draft'], log });
    expect(again).toMatchObject({ uploaded: 2, skipped: 3 });
    expect(lines.filter((l) => /skipped \(already there, sha256 matches\)/.test(l))).toHaveLength(3);
    const [third] = await uploadModels({ remote: false, persistTo, modelDirs: ['models/edgespec-draft'] });
    expect(third).toMatchObject({ uploaded: 0, skipped: 5 });
  });

  it('uploads a large file in parts', async () => {
    const dir = join(work, 'big-model');
    await cp('models/edgespec-draft', dir, { recursive: true });
    await writeFile(join(dir, 'onnx', 'model.onnx_data'), randomBytes(12 * 2 ** 20 + 123));
    await sha256sums(dir, ['config.json', 'generation_config.json', 'onnx/model_quantized.onnx', 'onnx/model.onnx_data', 'tokenizer.json', 'tokenizer_config.json', 'MODEL_CARD.md']);
    lines.length = 0;
    const [result] = await uploadModels({ remote: false, persistTo, modelDirs: [dir], log, multipartAbove: 8 * 2 ** 20, partBytes: 5 * 2 ** 20 });
    expect(result.uploaded).toBe(6);
    expect(lines.some((l) => /model\.onnx_data.*uploaded in 3 parts, verified/.test(l))).toBe(true);
    const { bucket, dispose } = await openModelsBucket({ remote: false, persistTo });
    try {
      const stored = await bucket.get('big-model/onnx/model.onnx_data');
      expect(Buffer.from(await stored!.arrayBuffer()).equals(await readFile(join(dir, 'onnx', 'model.onnx_data')))).toBe(true);
    } finally {
      await dispose();
    }
  });

  it('seedModels (the local stack) uses the same upload and says what it did', async () => {
    const seeded: string[] = [];
    const dir = join(work, 'seed');
    await seedModels({ persistTo: dir, modelDirs: ['models/edgespec-draft'], log: (l) => seeded.push(l) });
    await seedModels({ persistTo: dir, modelDirs: ['models/edgespec-draft'], log: (l) => seeded.push(l) });
    expect(seeded).toEqual(['seeded 5 file(s), 3.7 MB, of edgespec-draft into local R2', 'local R2 already holds edgespec-draft']);
  });
});
