import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { LOCAL_CREDENTIALS, readLocalCredentials, writeLocalCredentials } from './local-credentials';
import { startStack, type EdgeService } from './stack';

/**
 * `npm start`: the embedded default. A local origin verifying with the shipped
 * target model and the edge Worker drafting with the shipped int8 draft in
 * workerd, no accounts and no GPU. Prints the URL, a working local API key
 * (created on the first run, reused after) and a first request.
 */
const { values } = parseArgs({
  options: {
    port: { type: 'string', default: process.env.PORT ?? '8787' },
    'origin-port': { type: 'string', default: process.env.ORIGIN_PORT ?? '8788' },
    target: { type: 'string', default: 'models/edgespec-target' },
    draft: { type: 'string', default: 'models/edgespec-draft-trimmed' },
  },
});

for (const dir of [values.target!, values.draft!]) {
  if (!existsSync(`${dir}/config.json`)) {
    console.error(`[start] no model in ${dir}: the shipped models are committed under models/ (see models/README.md)`);
    process.exit(1);
  }
}

const saved = readLocalCredentials();
const adminSecret = saved?.adminSecret ?? randomBytes(24).toString('hex');

const stack = await startStack({
  originPort: Number(values['origin-port']),
  edgePort: Number(values.port),
  targetDir: values.target,
  draftDir: values.draft,
  inheritOutput: true,
  // The production Worker (functions/index.ts): what a deployment runs.
  worker: 'production',
  persistTo: '.wrangler/state',
  adminSecret,
  tenant: false,
  // Edge -> origin calls are signed even locally: a fresh secret per run unless ORIGIN_SECRET is set.
  secret: process.env.ORIGIN_SECRET || randomBytes(32).toString('hex'),
  log: (line) => console.log(`[start] ${line}`),
}).catch((err: Error) => {
  console.error(`[start] ${err.message}`);
  process.exit(1);
});

const apiKey = await localApiKey(stack.edge, saved?.apiKey).catch(async (err: Error) => {
  console.error(`[start] could not set up the local API key: ${err.message}`);
  await stack.stop();
  process.exit(1);
});
await writeLocalCredentials({ adminSecret, apiKey });

console.log(`
edgespec is running.
  edge (OpenAI-compatible): ${stack.edgeUrl}/v1
  origin verifier:          ${stack.originUrl} (hosts the draft too: speculation.placement "origin")
  playground:               ${stack.edgeUrl}/playground/ (paste the key below)
  local API key:            ${apiKey}
  (kept in ${LOCAL_CREDENTIALS} with the local admin secret; \`npm run keys -- list\` manages keys)

Try:
  curl -s ${stack.edgeUrl}/v1/completions -H 'content-type: application/json' \\
    -H 'authorization: Bearer ${apiKey}' \\
    -d '{"prompt": "function add(a, b) {", "max_tokens": 32, "temperature": 0}'

With the openai client:
  const client = new OpenAI({ baseURL: '${stack.edgeUrl}/v1', apiKey: '${apiKey}' });

Ctrl-C stops both processes.
`);

let stopping = false;
const shutdown = async (code: number) => {
  if (stopping) return;
  stopping = true;
  await stack.stop();
  process.exit(code);
};
process.on('SIGINT', () => void shutdown(0));
process.on('SIGTERM', () => void shutdown(0));
for (const child of [stack.origin.process, stack.edge.process]) {
  child.on('exit', (code) => {
    if (!stopping) {
      console.error(`[start] a process exited (code ${code}); stopping`);
      void shutdown(1);
    }
  });
}

/** The saved local key when it still works (the local database may have been wiped), else a new one for the tenant "local". */
async function localApiKey(edge: EdgeService, savedKey: string | undefined): Promise<string> {
  if (savedKey) {
    const check = await fetch(`${edge.url}/v1/models`, { headers: { authorization: `Bearer ${savedKey}` } });
    if (check.ok) return savedKey;
  }
  const tenants = (await edge.admin('GET', '/admin/tenants')) as { data: Array<{ id: string; name: string }> };
  const tenant = tenants.data.find((t) => t.name === 'local') ?? (await edge.admin('POST', '/admin/tenants', { name: 'local' }));
  const created = await edge.admin('POST', '/admin/keys', { tenant: tenant.id, name: 'npm-start' });
  console.log(`[start] created local API key ${created.id} for tenant "local"`);
  return created.key as string;
}
