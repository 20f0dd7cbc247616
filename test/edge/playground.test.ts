import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { apiKey, edgeUrl, sseData } from '../support/edge-client';

/**
 * The playground (public/playground/, served by the Worker as static assets)
 * in a real headless Chromium (Debian's, driven by playwright-core): the page
 * loads with its CSP, a generation runs end to end through the public API
 * with a pasted key, and every token on the page carries the source, id and
 * colour that the response's own `speculation_record` gave it.
 *
 * Needs Chromium at CHROMIUM_PATH (default /usr/bin/chromium: `apt-get install chromium`;
 * .ci/run installs it). Without it the file is skipped with a notice, except where
 * EDGESPEC_REQUIRE_BROWSER is set (.ci/run sets it),
 * and then a missing browser fails. PLAYGROUND_SCREENSHOT=path saves a screenshot (README's).
 */
const executablePath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const haveBrowser = existsSync(executablePath);
if (!haveBrowser) {
  if (process.env.EDGESPEC_REQUIRE_BROWSER) throw new Error(`Chromium not found at ${executablePath}: the playground test needs it in CI (apt-get install chromium)`);
  console.warn(`[playground test] skipped: no Chromium at ${executablePath} (apt-get install chromium, or set CHROMIUM_PATH)`);
}

let browser: Browser;
beforeAll(async () => {
  if (!haveBrowser) return;
  // The flags a sandboxed, offline machine needs (no GPU, no background calls to Google's hosts).
  browser = await chromium.launch({
    executablePath,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});
afterAll(async () => {
  await browser?.close();
});

/** Everything the page's stream delivered, read from the network response itself (not from the page). */
async function runGeneration(page: Page, settings: Record<string, string>): Promise<{ tokens: any[]; rounds: any[] }> {
  await page.fill('#key', apiKey());
  for (const [selector, value] of Object.entries(settings)) {
    if ((await page.locator(selector).evaluate((el) => el.tagName)) === 'SELECT') await page.selectOption(selector, value);
    else await page.fill(selector, value);
  }
  const responsePromise = page.waitForResponse((r) => r.url().endsWith('/v1/completions'));
  await page.click('#run');
  const response = await responsePromise;
  expect(response.status()).toBe(200);
  const chunks = sseData(await response.text())
    .filter((d) => d !== '[DONE]')
    .map((d) => JSON.parse(d));
  await expect.poll(() => page.locator('#status').getAttribute('data-state'), { timeout: 60_000 }).toBe('done');
  return { tokens: chunks.flatMap((c) => c.speculation_record?.tokens ?? []), rounds: chunks.flatMap((c) => c.speculation_record?.rounds ?? []) };
}

// These callbacks run in the page (the project's TypeScript has no DOM types, hence `any`).
/** The page's tokens as drawn: source, id, round, text and background colour. */
function drawnTokens(page: Page): Promise<Array<{ source: string; id: number; round: number; text: string; colour: string }>> {
  return page.$$eval('#output .token', (spans: any[]) =>
    spans.map((s) => ({ source: s.dataset.source, id: Number(s.dataset.id), round: Number(s.dataset.round), text: s.textContent, colour: (globalThis as any).getComputedStyle(s).backgroundColor })),
  );
}

/** The legend's colour of each source, as the page renders it. */
function legendColours(page: Page): Promise<Record<string, string>> {
  return page.$$eval('#legend .token', (spans: any[]) => Object.fromEntries(spans.map((s) => [s.classList[1], (globalThis as any).getComputedStyle(s).backgroundColor])));
}

describe.skipIf(!haveBrowser)('the playground in headless Chromium', () => {
  it('loads from the Worker’s static assets with a strict CSP and no secret in it', async () => {
    const response = await fetch(`${edgeUrl()}/playground/`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-security-policy')).toContain("connect-src 'self'");
    const html = await response.text();
    expect(html).toContain('<form id="request">');
    expect(html).not.toContain(apiKey());
    const script = await (await fetch(`${edgeUrl()}/playground/playground.js`)).text();
    expect(script).not.toMatch(/esk_[A-Za-z0-9_-]{20,}/);
  });

  it('runs a generation end to end and colours every token by the response’s record', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const errors: string[] = [];
    page.on('pageerror', (err) => errors.push(err.message));
    page.on('console', (msg) => msg.type() === 'error' && errors.push(msg.text()));
    await page.goto(`${edgeUrl()}/playground/`);
    const record = await runGeneration(page, { '#prompt': 'function fibonacci(n) {', '#max-tokens': '64', '#temperature': '0', '#proposer': 'draft-model', '#mode': 'lockstep', '#draft-length': '4' });
    expect(record.tokens.length).toBeGreaterThan(8);

    const drawn = await drawnTokens(page);
    expect(drawn.map(({ source, id, round, text }) => ({ source, id, round, text }))).toEqual(record.tokens.map(({ source, id, round, text }) => ({ source, id, round, text })));
    // Each source has its own colour, the same as the legend's, and speculation visibly happened.
    const legend = await legendColours(page);
    for (const token of drawn) expect(token.colour, token.source).toBe(legend[token.source]);
    expect(new Set(Object.values(legend)).size).toBe(Object.keys(legend).length);
    const sources = new Set(drawn.map((t) => t.source));
    expect(sources.has('draft-accepted')).toBe(true);
    expect(sources.has('target-correction') || sources.has('bonus')).toBe(true);

    // One timeline bar per round, and the live numbers agree with the record.
    expect(await page.locator('#timeline li').count()).toBe(record.rounds.length);
    expect(await page.textContent('#stat-tokens')).toBe(String(record.tokens.length));
    const drafted = record.rounds.reduce((n, r) => n + r.drafted.length, 0);
    const accepted = record.rounds.reduce((n, r) => n + r.accepted, 0);
    expect(await page.textContent('#stat-acceptance')).toContain(`(${accepted}/${drafted})`);
    expect(Number(await page.textContent('#stat-rate'))).toBeGreaterThan(0);
    expect(errors).toEqual([]);

    if (process.env.PLAYGROUND_SCREENSHOT) {
      await mkdir(dirname(process.env.PLAYGROUND_SCREENSHOT), { recursive: true });
      await page.screenshot({ path: process.env.PLAYGROUND_SCREENSHOT, fullPage: true });
    }
    await page.close();
  });

  it('shows drafting at the origin and origin-only decoding by their sources, and a bad key as an error on the page', async () => {
    const page = await browser.newPage();
    await page.goto(`${edgeUrl()}/playground/`);
    const atOrigin = await runGeneration(page, { '#prompt': 'function add(a, b) {', '#max-tokens': '24', '#temperature': '0', '#placement': 'origin' });
    expect((await drawnTokens(page)).map((t) => t.source)).toEqual(atOrigin.tokens.map((t) => t.source));
    expect(atOrigin.tokens.some((t) => t.source === 'draft-accepted')).toBe(true);

    const record = await runGeneration(page, { '#prompt': 'const x = ', '#max-tokens': '8', '#placement': 'none' });
    const drawn = await drawnTokens(page);
    expect(drawn.map((t) => t.source)).toEqual(record.tokens.map(() => 'origin'));

    await page.fill('#key', 'esk_not-a-key');
    await page.click('#run');
    await expect.poll(() => page.locator('#status').getAttribute('data-state'), { timeout: 30_000 }).toBe('error');
    expect(await page.textContent('#status')).toMatch(/API key/i);
    await page.close();
  });
});
