import { describe, expect, it } from 'vitest';
import { blockedRange, checkWebhookUrl, parseIpLiteral, parseIpv6 } from '../../functions/webhooks/ssrf';

const production = { allowHttpLoopback: false };
const development = { allowHttpLoopback: true };

const refused = (url: string, policy = production) => {
  const check = checkWebhookUrl(url, policy);
  return check.ok ? null : check.reason;
};

describe('checkWebhookUrl', () => {
  it.each([
    'https://example.com/hooks',
    'https://hooks.example.co.uk:8443/a?b=c',
    'https://8.8.8.8/',
    'https://[2606:4700:4700::1111]/',
    'https://[::ffff:8.8.8.8]/', // mapped public IPv4
    'https://[2002:808:808::1]/', // 6to4 of a public IPv4
  ])('accepts %s', (url) => {
    expect(refused(url)).toBeNull();
  });

  it.each([
    ['http://example.com/', /plain http/],
    ['ftp://example.com/', /scheme/],
    ['javascript:alert(1)', /scheme/],
    ['https://user:pass@example.com/', /credentials/],
    ['https://user@example.com/', /credentials/],
    ['https://example.com/#frag', /fragment/],
    ['not a url', /absolute/],
    [`https://example.com/${'a'.repeat(2100)}`, /longer/],
  ])('refuses %s', (url, reason) => {
    expect(refused(url)).toMatch(reason);
  });

  it.each([
    // IPv4 private, loopback, link-local / metadata, CGNAT, reserved — and their decimal, hex, octal and short spellings
    ['https://10.0.0.1/', 'private'],
    ['https://172.16.5.4/', 'private'],
    ['https://172.31.255.255/', 'private'],
    ['https://192.168.1.1/', 'private'],
    ['https://127.0.0.1/', 'loopback'],
    ['https://127.255.255.254/', 'loopback'],
    ['https://2130706433/', 'loopback'], // decimal
    ['https://0x7f000001/', 'loopback'], // hex
    ['https://0x7f.1/', 'loopback'], // hex, short
    ['https://0177.0.0.1/', 'loopback'], // octal
    ['https://127.1/', 'loopback'], // short
    ['https://127.0.0.1./', 'loopback'], // trailing dot
    ['https://0/', '"this network"'],
    ['https://0.0.0.0/', '"this network"'],
    ['https://169.254.169.254/latest/meta-data/', 'link-local (cloud metadata)'],
    ['https://0xa9fea9fe/', 'link-local (cloud metadata)'], // metadata, hex
    ['https://2852039166/', 'link-local (cloud metadata)'], // metadata, decimal
    ['https://100.64.0.1/', 'CGNAT (shared address space)'],
    ['https://100.100.100.200/', 'CGNAT (shared address space)'], // Alibaba metadata
    ['https://100.127.255.255/', 'CGNAT (shared address space)'],
    ['https://192.0.0.170/', 'IETF protocol assignment'],
    ['https://198.18.0.1/', 'benchmarking'],
    ['https://224.0.0.1/', 'multicast'],
    ['https://240.0.0.1/', 'reserved'],
    ['https://255.255.255.255/', 'broadcast'],
    // IPv6
    ['https://[::1]/', 'loopback'],
    ['https://[0:0:0:0:0:0:0:1]/', 'loopback'],
    ['https://[::]/', 'unspecified'],
    ['https://[fe80::1]/', 'link-local'],
    ['https://[fc00::1]/', 'unique-local (private)'],
    ['https://[fd00:ec2::254]/', 'unique-local (private)'], // AWS IPv6 metadata
    ['https://[fec0::1]/', 'site-local'],
    ['https://[ff02::1]/', 'multicast'],
    ['https://[::ffff:127.0.0.1]/', 'loopback'], // mapped
    ['https://[::ffff:7f00:1]/', 'loopback'], // mapped, hex
    ['https://[::ffff:10.0.0.1]/', 'private (IPv4-mapped)'],
    ['https://[::ffff:169.254.169.254]/', 'link-local (cloud metadata) (IPv4-mapped)'],
    ['https://[::127.0.0.1]/', 'loopback'], // compatible
    ['https://[::10.0.0.1]/', 'private (IPv4-compatible)'],
    ['https://[::8.8.8.8]/', 'IPv4-compatible (deprecated)'],
    ['https://[::ffff:0:10.0.0.1]/', 'private (IPv4-translated)'],
    ['https://[64:ff9b::a9fe:a9fe]/', 'link-local (cloud metadata) (NAT64)'],
    ['https://[64:ff9b::10.1.2.3]/', 'private (NAT64)'],
    ['https://[2002:a00:1::]/', 'private (6to4)'],
    ['https://[2002:7f00:1::]/', 'loopback'],
    ['https://[2001:db8::1]/', 'documentation'],
    ['https://[2001::1]/', 'Teredo'],
  ])('refuses the IP literal %s (%s)', (url, range) => {
    expect(refused(url)).toBe(`${new URL(url).hostname} is a ${range} address`);
  });

  it.each(['https://localhost/', 'https://LOCALHOST:8080/', 'https://api.localhost/', 'https://printer.local/', 'https://metadata.google.internal/', 'https://db.internal/', 'https://intranet/', 'https://router.home.arpa/'])(
    'refuses the internal name %s',
    (url) => {
      expect(refused(url)).toMatch(/loopback name|internal name|single-label/);
    },
  );

  it('plain http only to loopback, and only when development allows it', () => {
    for (const url of ['http://127.0.0.1:9000/hook', 'http://localhost:9000/hook', 'http://[::1]:9000/hook', 'http://[::ffff:127.0.0.1]/', 'http://2130706433/']) {
      expect(refused(url), url).toMatch(/loopback/);
      expect(refused(url, development), url).toBeNull();
    }
    // Development never opens private ranges or plain http elsewhere.
    expect(refused('http://example.com/', development)).toMatch(/only to loopback/);
    expect(refused('http://10.0.0.1/', development)).toMatch(/private/);
    expect(refused('https://169.254.169.254/', development)).toMatch(/metadata/);
  });
});

describe('IP literal parsing', () => {
  it('parses IPv6 text forms to the same bytes', () => {
    const full = parseIpv6('0:0:0:0:0:ffff:7f00:1');
    expect(parseIpv6('::ffff:7f00:1')).toEqual(full);
    expect(parseIpv6('::ffff:127.0.0.1')).toEqual(full);
    expect(parseIpv6('::FFFF:127.0.0.1')).toEqual(full);
  });

  it.each(['1::2::3', '12345::', ':::', '1:2:3:4:5:6:7:8:9', 'fe80::1%eth0', '::ffff:999.0.0.1', 'g::1', ''])('refuses the malformed IPv6 %j', (text) => {
    expect(parseIpv6(text)).toBeNull();
  });

  it('IPv4 literals are strict dotted quads; anything else is a name', () => {
    expect(parseIpLiteral('10.0.0.1')).toEqual(new Uint8Array([10, 0, 0, 1]));
    expect(parseIpLiteral('10.0.0.256')).toBeNull();
    expect(parseIpLiteral('example.com')).toBeNull();
  });

  it('public addresses are in no range', () => {
    for (const text of ['8.8.8.8', '1.1.1.1', '172.32.0.1', '100.128.0.1', '169.255.0.1', '192.169.0.1']) expect(blockedRange(parseIpLiteral(text)!), text).toBeNull();
    for (const text of ['[2606:4700::1111]', '[2a00:1450::1]']) expect(blockedRange(parseIpLiteral(text)!), text).toBeNull();
  });
});
