import { existsSync, readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';

/**
 * The local stack's credentials, kept between `npm start` runs next to its
 * state (ignored by git): the admin secret of the local edge and the API key
 * `npm start` prints. `npm run keys` reads the admin secret from here when
 * ADMIN_SECRET is not set, so the local admin API needs no configuration.
 */
export const LOCAL_CREDENTIALS = '.wrangler/state/edgespec-local.json';

export interface LocalCredentials {
  adminSecret: string;
  apiKey?: string;
}

export function readLocalCredentials(path = LOCAL_CREDENTIALS): LocalCredentials | null {
  if (!existsSync(path)) return null;
  try {
    const parsed = JSON.parse(readFileSync(path, 'utf8')) as LocalCredentials;
    return typeof parsed.adminSecret === 'string' && parsed.adminSecret.length >= 16 ? parsed : null;
  } catch {
    return null;
  }
}

export async function writeLocalCredentials(credentials: LocalCredentials, path = LOCAL_CREDENTIALS): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, JSON.stringify(credentials, null, 2) + '\n', { mode: 0o600 });
}
