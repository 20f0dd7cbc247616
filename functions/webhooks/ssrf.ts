/**
 * The SSRF guard for every URL a tenant gives us to call (webhook endpoints,
 * a job's inline webhook). Pure, so it is unit-tested without a runtime
 * (test/webhooks/ssrf.test.ts); checked when a URL is registered and again
 * right before every send, whose fetch never follows redirects.
 *
 *   - https only; plain http only to a loopback address, and only when the
 *     operator allows it for local development (WEBHOOK_ALLOW_HTTP_LOOPBACK);
 *   - no userinfo (`https://user:pass@host`), no fragment games;
 *   - no IP literal in a private, loopback, link-local, CGNAT, metadata,
 *     documentation, multicast or reserved range, IPv4 or IPv6, including
 *     IPv4-mapped / -compatible / NAT64 / 6to4 forms of such an address. The
 *     WHATWG URL parser turns decimal, hex and octal IPv4 spellings
 *     (`2130706433`, `0x7f.1`, `0177.0.0.1`) into dotted form first, so they
 *     meet the same check; anything that still looks numeric is refused;
 *   - no names that only mean something inside a network (`localhost`,
 *     `*.localhost`, `*.local`, `*.internal`, single-label names, …).
 *
 * A hostname is not resolved here (Workers have no resolver; the edge's
 * egress does not route into private networks), so the guard is about what
 * the URL says, which is what a tenant controls.
 */
export interface UrlPolicy {
  /** Plain http:// to a loopback address (development only; never on by default). */
  allowHttpLoopback: boolean;
}

export type UrlCheck = { ok: true; url: URL } | { ok: false; reason: string };

const MAX_URL_LENGTH = 2048;
const BLOCKED_NAME_SUFFIXES = ['.localhost', '.local', '.internal', '.localdomain', '.home.arpa', '.intranet', '.lan', '.corp', '.private'];
const BLOCKED_NAMES = new Set(['localhost', 'localhost.localdomain', 'metadata', 'metadata.google.internal', 'instance-data', 'kubernetes.default']);

export function checkWebhookUrl(input: string, policy: UrlPolicy): UrlCheck {
  if (input.length > MAX_URL_LENGTH) return refuse(`the URL is longer than ${MAX_URL_LENGTH} characters`);
  let url: URL;
  try {
    url = new URL(input);
  } catch {
    return refuse('not an absolute URL');
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return refuse(`scheme ${url.protocol} is not allowed; use https://`);
  if (url.username || url.password) return refuse('credentials in the URL (user:pass@) are not allowed');
  if (url.hash) return refuse('a URL fragment (#…) is not allowed');
  const host = url.hostname.toLowerCase();
  if (!host) return refuse('the URL has no host');

  const address = parseIpLiteral(host);
  if (address) {
    const range = blockedRange(address);
    if (range === 'loopback' && policy.allowHttpLoopback) return { ok: true, url };
    if (range) return refuse(`${host} is a ${range} address`);
  } else {
    const name = host.replace(/\.$/, '');
    if (looksNumeric(name)) return refuse(`${host} looks like an IP address in a form that is not allowed`);
    if (name === 'localhost' || name.endsWith('.localhost')) {
      if (policy.allowHttpLoopback) return { ok: true, url };
      return refuse(`${host} is a loopback name`);
    }
    if (BLOCKED_NAMES.has(name) || BLOCKED_NAME_SUFFIXES.some((suffix) => name.endsWith(suffix))) return refuse(`${host} is an internal name`);
    if (!name.includes('.')) return refuse(`${host} is a single-label name; use a public hostname`);
  }
  if (url.protocol === 'http:') return refuse(policy.allowHttpLoopback ? 'plain http:// is allowed only to loopback addresses' : 'plain http:// is not allowed; use https://');
  return { ok: true, url };
}

const refuse = (reason: string): UrlCheck => ({ ok: false, reason });

/** A host the URL parser left alone yet made of digits, dots, "x" and hex letters only: a numeric spelling it did not normalise. */
function looksNumeric(name: string): boolean {
  return /^[0-9.]+$/.test(name) || /^(0x[0-9a-f]*\.?)+$/.test(name);
}

/** An IP literal as a URL hostname ("10.0.0.1" or "[fe80::1]") → its bytes (4 or 16), else null. */
export function parseIpLiteral(host: string): Uint8Array | null {
  if (host.startsWith('[') && host.endsWith(']')) return parseIpv6(host.slice(1, -1));
  return parseIpv4(host.replace(/\.$/, ''));
}

/** Strict dotted-quad IPv4 (what the URL parser produces). */
export function parseIpv4(text: string): Uint8Array | null {
  const parts = text.split('.');
  if (parts.length !== 4) return null;
  const bytes = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    if (!/^\d{1,3}$/.test(parts[i])) return null;
    const value = Number(parts[i]);
    if (value > 255) return null;
    bytes[i] = value;
  }
  return bytes;
}

/** RFC 4291 text form, with "::" and an embedded dotted IPv4 tail; a zone id ("%eth0") is refused. */
export function parseIpv6(text: string): Uint8Array | null {
  if (!text || text.includes('%')) return null;
  let tail: Uint8Array | null = null;
  let body = text;
  const lastColon = text.lastIndexOf(':');
  if (text.slice(lastColon + 1).includes('.')) {
    tail = parseIpv4(text.slice(lastColon + 1));
    if (!tail) return null;
    body = text.slice(0, lastColon + 1) + '0:0';
  }
  const halves = body.split('::');
  if (halves.length > 2) return null;
  const groups = (part: string) => (part === '' ? [] : part.split(':'));
  const head = groups(halves[0]);
  const rest = halves.length === 2 ? groups(halves[1]) : [];
  const missing = 8 - head.length - rest.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return null;
  const all = [...head, ...Array<string>(halves.length === 2 ? missing : 0).fill('0'), ...rest];
  const bytes = new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    if (!/^[0-9a-f]{1,4}$/i.test(all[i])) return null;
    const value = parseInt(all[i], 16);
    bytes[2 * i] = value >> 8;
    bytes[2 * i + 1] = value & 0xff;
  }
  if (tail) bytes.set(tail, 12);
  return bytes;
}

type Cidr = readonly [prefix: number[], bits: number, name: string];

const V4_BLOCKED: Cidr[] = [
  [[0, 0, 0, 0], 8, '"this network"'],
  [[10, 0, 0, 0], 8, 'private'],
  [[100, 64, 0, 0], 10, 'CGNAT (shared address space)'],
  [[127, 0, 0, 0], 8, 'loopback'],
  [[169, 254, 0, 0], 16, 'link-local (cloud metadata)'],
  [[172, 16, 0, 0], 12, 'private'],
  [[192, 0, 0, 0], 24, 'IETF protocol assignment'],
  [[192, 0, 2, 0], 24, 'documentation'],
  [[192, 88, 99, 0], 24, '6to4 relay'],
  [[192, 168, 0, 0], 16, 'private'],
  [[198, 18, 0, 0], 15, 'benchmarking'],
  [[198, 51, 100, 0], 24, 'documentation'],
  [[203, 0, 113, 0], 24, 'documentation'],
  [[224, 0, 0, 0], 4, 'multicast'],
  [[240, 0, 0, 0], 4, 'reserved'],
];

const V6_BLOCKED: Cidr[] = [
  [[0xfc], 7, 'unique-local (private)'],
  [[0xfe, 0x80], 10, 'link-local'],
  [[0xfe, 0xc0], 10, 'site-local'],
  [[0xff], 8, 'multicast'],
  [[0x01, 0x00, 0, 0, 0, 0, 0, 0], 64, 'discard-only'],
  [[0x20, 0x01, 0x0d, 0xb8], 32, 'documentation'],
  [[0x20, 0x01, 0x00, 0x00], 32, 'Teredo'],
  [[0x20, 0x01, 0x00, 0x10], 28, 'ORCHID'],
  [[0x20, 0x01, 0x00, 0x20], 28, 'ORCHIDv2'],
  [[0x00, 0x64, 0xff, 0x9b, 0x00, 0x01], 48, 'local-use NAT64'],
  [[0x3f, 0xff], 20, 'documentation'],
  [[0x5f, 0x00], 16, 'segment routing'],
];

function inCidr(address: Uint8Array, [prefix, bits]: Cidr): boolean {
  for (let bit = 0; bit < bits; bit++) {
    const byte = bit >> 3;
    const mask = 0x80 >> (bit & 7);
    if ((address[byte] & mask) !== ((prefix[byte] ?? 0) & mask)) return false;
  }
  return true;
}

/** The name of the non-public range an address is in (e.g. "private", "loopback"), or null for a public address. */
export function blockedRange(address: Uint8Array): string | null {
  if (address.length === 4) {
    if (address.every((b) => b === 255)) return 'broadcast';
    return V4_BLOCKED.find((cidr) => inCidr(address, cidr))?.[2] ?? null;
  }
  const zeros = (from: number, to: number) => address.slice(from, to).every((b) => b === 0);
  if (zeros(0, 15) && address[15] === 0) return 'unspecified';
  if (zeros(0, 15) && address[15] === 1) return 'loopback';
  const embedded = (v4: Uint8Array, form: string) => {
    const range = blockedRange(v4);
    return range ? (range === 'loopback' ? 'loopback' : `${range} (${form})`) : null;
  };
  // ::ffff:a.b.c.d (mapped), ::a.b.c.d (compatible, deprecated), ::ffff:0:a.b.c.d (SIIT), 64:ff9b::a.b.c.d (NAT64): the IPv4 inside decides.
  if (zeros(0, 10) && address[10] === 0xff && address[11] === 0xff) return embedded(address.slice(12), 'IPv4-mapped');
  if (zeros(0, 12)) return embedded(address.slice(12), 'IPv4-compatible') ?? 'IPv4-compatible (deprecated)';
  if (zeros(0, 8) && address[8] === 0xff && address[9] === 0xff && zeros(10, 12)) return embedded(address.slice(12), 'IPv4-translated');
  if (address[0] === 0x00 && address[1] === 0x64 && address[2] === 0xff && address[3] === 0x9b && zeros(4, 12)) return embedded(address.slice(12), 'NAT64');
  // 2002:AABB:CCDD::/48 is 6to4 for the IPv4 AA.BB.CC.DD.
  if (address[0] === 0x20 && address[1] === 0x02) return embedded(address.slice(2, 6), '6to4');
  return V6_BLOCKED.find((cidr) => inCidr(address, cidr))?.[2] ?? null;
}
