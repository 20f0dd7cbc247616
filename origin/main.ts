import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { serve } from '@hono/node-server';
import * as ort from 'onnxruntime-node';
import { loadModel, type OrtRuntime } from '../shared/model';
import { folderFiles } from '../shared/model/node-files';
import { createOriginApp } from './app';
import { TargetModel } from './target';

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: process.env.ORIGIN_PORT ?? '8788' },
    host: { type: 'string', default: process.env.ORIGIN_HOST ?? '127.0.0.1' },
    model: { type: 'string', default: process.env.ORIGIN_MODEL ?? 'models/edgespec-target' },
    id: { type: 'string', default: process.env.ORIGIN_ID ?? 'origin-0' },
    threads: { type: 'string', default: process.env.ORIGIN_THREADS ?? '1' },
  },
});

const port = Number(values.port);
const threads = Number(values.threads);
if (!Number.isInteger(port) || port <= 0 || port > 65535) fail(`--port must be a TCP port, got "${values.port}"`);
if (!Number.isInteger(threads) || threads < 1) fail(`--threads must be a positive integer, got "${values.threads}"`);

const modelDir = resolve(values.model!);
const files = folderFiles(modelDir);

const started = performance.now();
const { lm, onnxPath, config } = await loadModel(ort as unknown as OrtRuntime, files, 'full', {
  intraOpNumThreads: threads,
  interOpNumThreads: 1,
}).catch((err: Error) => fail(`cannot load target model from ${values.model}: ${err.message}`));
const modelName = modelDir.split(/[\\/]/).pop()!;
const app = createOriginApp({ id: values.id!, modelName, target: new TargetModel(lm) });

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
