/**
 * A strict reader of the Prometheus text exposition format 0.0.4, for tests:
 * it reads back what shared/metrics.ts renders (and what the edge and origin
 * serve at /metrics) and throws on any line it does not understand, so a
 * malformed exposition fails the test that reads it.
 */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Exposition {
  help: Map<string, string>;
  types: Map<string, string>;
  samples: Sample[];
}

const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
const SAMPLE = new RegExp(`^(${NAME})(\\{(.*)\\})? (\\S+)$`);

export function parseExposition(text: string): Exposition {
  if (text !== '' && !text.endsWith('\n')) throw new Error('an exposition ends with a line feed');
  const out: Exposition = { help: new Map(), types: new Map(), samples: [] };
  for (const line of text.split('\n').slice(0, -1)) {
    const help = new RegExp(`^# HELP (${NAME}) (.*)$`).exec(line);
    if (help) {
      out.help.set(help[1], help[2].replace(/\\(\\|n)/g, (_, c: string) => (c === 'n' ? '\n' : '\\')));
      continue;
    }
    const type = new RegExp(`^# TYPE (${NAME}) (counter|gauge|histogram|summary|untyped)$`).exec(line);
    if (type) {
      if (out.types.has(type[1])) throw new Error(`second TYPE line for ${type[1]}`);
      out.types.set(type[1], type[2]);
      continue;
    }
    const sample = SAMPLE.exec(line);
    if (!sample) throw new Error(`not a sample, HELP or TYPE line: ${JSON.stringify(line)}`);
    out.samples.push({ name: sample[1], labels: sample[3] ? parseLabels(sample[3]) : {}, value: parseValue(sample[4]) });
  }
  return out;
}

function parseLabels(text: string): Record<string, string> {
  const labels: Record<string, string> = {};
  let i = 0;
  while (i < text.length) {
    const name = /^[a-zA-Z_][a-zA-Z0-9_]*="/.exec(text.slice(i));
    if (!name) throw new Error(`bad label at ${JSON.stringify(text.slice(i))}`);
    i += name[0].length;
    let value = '';
    for (;;) {
      const c = text[i++];
      if (c === undefined) throw new Error('unterminated label value');
      if (c === '"') break;
      if (c === '\\') {
        const e = text[i++];
        if (e === 'n') value += '\n';
        else if (e === '\\' || e === '"') value += e;
        else throw new Error(`bad escape \\${e}`);
      } else if (c === '\n') throw new Error('raw line feed in a label value');
      else value += c;
    }
    const key = name[0].slice(0, -2);
    if (key in labels) throw new Error(`label ${key} twice`);
    labels[key] = value;
    if (text[i] === ',') i++;
    else if (i < text.length) throw new Error(`expected "," at ${JSON.stringify(text.slice(i))}`);
  }
  return labels;
}

function parseValue(text: string): number {
  if (text === '+Inf') return Infinity;
  if (text === '-Inf') return -Infinity;
  if (text === 'NaN') return NaN;
  const value = Number(text);
  if (Number.isNaN(value)) throw new Error(`bad value ${text}`);
  return value;
}

/** The value of the one sample with this name whose labels include `labels`; 0 when there is none. */
export function sampleValue(exposition: Exposition, name: string, labels: Record<string, string> = {}): number {
  const matches = exposition.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (matches.length > 1) throw new Error(`${matches.length} samples of ${name} match ${JSON.stringify(labels)}`);
  return matches[0]?.value ?? 0;
}

/** The sum over every sample with this name whose labels include `labels`. */
export function sampleSum(exposition: Exposition, name: string, labels: Record<string, string> = {}): number {
  return exposition.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)).reduce((sum, s) => sum + s.value, 0);
}
