import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { serve } from '@hono/node-server';
import * as ort from 'onnxruntime-node';
import { loadModel, type OrtRuntime } from '../shared/model';
import { folderFiles } from '../shared/model/node-files';
import { createOriginApp } from './app';
import { costModel, holdForwardPasses } from './cost-model';
import { TargetModel } from './target';

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: process.env.ORIGIN_PORT ?? '8788' },
    host: { type: 'string', default: process.env.ORIGIN_HOST ?? '127.0.0.1' },
    model: { type: 'string', default: process.env.ORIGIN_MODEL ?? 'models/edgespec-target' },
    id: { type: 'string', default: process.env.ORIGIN_ID ?? 'origin-0' },
    threads: { type: 'string', default: process.env.ORIGIN_THREADS ?? '1' },
    // Benchmarks: hold each forward pass to a modelled GPU duration (origin/cost-model.ts).
    'cost-model': { type: 'string', default: process.env.ORIGIN_COST_MODEL ?? '' },
    'kv-cache-mb': { type: 'string', default: process.env.ORIGIN_KV_CACHE_MB ?? '256' },
    'kv-block': { type: 'string', default: process.env.ORIGIN_KV_BLOCK ?? '16' },
  },
});

const port = Number(values.port);
const threads = Number(values.threads);
if (!Number.isInteger(port) || port <= 0 || port > 65535) fail(`--port must be a TCP port, got "${values.port}"`);
if (!Number.isInteger(threads) || threads < 1) fail(`--threads must be a positive integer, got "${values.threads}"`);
const kvCacheMb = Number(values['kv-cache-mb']);
const kvBlock = Number(values['kv-block']);
if (!(kvCacheMb >= 0)) fail(`--kv-cache-mb must be a non-negative number of MiB, got "${values['kv-cache-mb']}"`);
if (!Number.isInteger(kvBlock) || kvBlock < 1) fail(`--kv-block must be a positive integer (tokens per KV block), got "${values['kv-block']}"`);

const modelDir = resolve(values.model!);
const files = folderFiles(modelDir);

const started = performance.now();
const { lm, onnxPath, config } = await loadModel(ort as unknown as OrtRuntime, files, 'full', {
  intraOpNumThreads: threads,
  interOpNumThreads: 1,
}).catch((err: Error) => fail(`cannot load target model from ${values.model}: ${err.message}`));
const modelName = modelDir.split(/[\\/]/).pop()!;
const target = new TargetModel(lm, { modelId: modelName, maxBytes: kvCacheMb * 2 ** 20, blockTokens: kvBlock });
if (values['cost-model']) {
  const model = (() => {
    try {
      return costModel(values['cost-model']!);
    } catch (err) {
      return fail((err as Error).message);
    }
  })();
  const held = holdForwardPasses(target, model);
  console.log(`[origin ${values.id}] forward passes held to the GPU cost model ${model.describe}`);
  process.on('exit', () => console.log(`[origin ${values.id}] cost model: ${held.overruns} of ${held.passes} passes ran longer on this CPU than modelled`));
}
const app = createOriginApp({ id: values.id!, modelName, target });

const server = serve({ fetch: app.fetch, port, hostname: values.host }, (info) => {
  console.log(
    `[origin ${values.id}] ${modelName} (${onnxPath}, ${config.numLayers} layers, vocab ${config.vocabSize}, context ${config.maxPositions}) ` +
      `loaded in ${Math.round(performance.now() - started)} ms; listening on http://${values.host}:${info.port}`,
  );
});
server.on('error', (err) => fail(`cannot listen on ${values.host}:${port}: ${err.message}`));
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => server.close(() => process.exit(0)));

function fail(message: string): never {
  console.error(`[origin] ${message}`);
  process.exit(1);
}
