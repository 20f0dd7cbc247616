// Builds the training corpus from source files of permissively licensed npm
// packages. The licence is read from each package's own package.json; whole
// packages are held out for validation and for benchmark prompts, so held-out
// loss measures generalisation to unseen code, not memorised files.
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";

export interface CorpusOptions {
  /** node_modules folder to read packages from */
  sourceDir: string;
  /** where train/val/bench JSONL files go */
  outDir: string;
  /** committed manifest (package, version, licence, split) */
  manifestPath?: string;
  /** committed benchmark prompts */
  benchPromptsPath?: string;
  /** bytes kept per package at most */
  perPackageBytes: number;
  /** bytes kept in total at most */
  totalBytes: number;
}

// SPDX ids accepted as permissive (ARCHITECTURE.md: Platform facts, "Training the model pair here").
const PERMISSIVE = new Set([
  "MIT", "MIT-0", "ISC", "Apache-2.0", "BSD-2-Clause", "BSD-3-Clause", "0BSD",
  "BlueOak-1.0.0", "Unlicense", "CC0-1.0", "Zlib",
]);
const SOURCE_EXT = /\.(m|c)?(j|t)sx?$/;
const SKIP_DIRS = new Set(["node_modules", ".git", "coverage", ".github", "__snapshots__", "benchmark", "fixtures"]);
// Folder names that hold alternative builds of the same module (cjs/esm copies).
const BUILD_DIRS = new Set(["cjs", "esm", "es", "lib", "dist", "module", "modules", "commonjs", "umd", "es2015", "es2017", "es2020", "es6", "es5", "build", "src", "browser", "node", "mjs", "types", "typings"]);

/** Reads a package.json licence field (string, SPDX expression, object or legacy array). */
export function readLicence(pkg: Record<string, unknown>): string {
  const l = pkg.license ?? pkg.licenses;
  if (typeof l === "string") return l.trim();
  if (Array.isArray(l)) return l.map((x) => (typeof x === "string" ? x : (x as { type?: string }).type ?? "")).join(" OR ");
  if (l && typeof l === "object" && typeof (l as { type?: unknown }).type === "string") return (l as { type: string }).type;
  return "UNKNOWN";
}

/** True when an SPDX expression grants a permissive licence: every AND term, any OR alternative. */
export function isPermissive(expr: string): boolean {
  const e = expr.replace(/[()]/g, " ").trim();
  if (!e) return false;
  return e.split(/\s+OR\s+/i).some((alt) => alt.split(/\s+AND\s+/i).every((id) => PERMISSIVE.has(id.trim())));
}

function hashInt(s: string): number {
  return createHash("sha256").update(s).digest().readUInt32BE(0);
}

export function splitOf(name: string): "train" | "val" | "bench" {
  const h = hashInt(`edgespec-split:${name}`) % 100;
  return h < 5 ? "val" : h < 8 ? "bench" : "train";
}

interface PackageDir { dir: string; name: string; version: string; licence: string }

function findPackages(root: string): PackageDir[] {
  const out: PackageDir[] = [];
  const visit = (nm: string) => {
    if (!existsSync(nm)) return;
    for (const entry of readdirSync(nm).sort()) {
      if (entry.startsWith(".")) continue;
      const p = join(nm, entry);
      if (entry.startsWith("@")) {
        for (const sub of readdirSync(p).sort()) addPackage(join(p, sub));
      } else addPackage(p);
    }
  };
  const addPackage = (dir: string) => {
    const pj = join(dir, "package.json");
    if (!existsSync(pj)) return;
    try {
      const pkg = JSON.parse(readFileSync(pj, "utf8"));
      if (typeof pkg.name === "string") out.push({ dir, name: pkg.name, version: String(pkg.version ?? "0.0.0"), licence: readLicence(pkg) });
    } catch { /* unreadable package.json: skip the package */ }
    visit(join(dir, "node_modules"));
  };
  visit(root);
  return out;
}

/** Minified or generated code teaches the model nothing about code people write. */
export function looksGenerated(path: string, text: string): boolean {
  if (/\.min\.|\.bundle\.|[-.]umd\.|\.prod\.|\.production\./.test(path)) return true;
  if (text.length < 200) return true;
  const lines = text.split("\n");
  let longest = 0;
  for (const l of lines) longest = Math.max(longest, l.length);
  if (longest > 400) return true;
  if (text.length / lines.length > 90) return true;
  if (/sourceMappingURL=data:|^\/\*\s*eslint-disable\s*\*\/\s*\/\/ Generated|@generated|DO NOT EDIT/m.test(text.slice(0, 2000))) return true;
  return false;
}

function listSources(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    let entries: string[];
    try { entries = readdirSync(d).sort(); } catch { return; }
    for (const e of entries) {
      if (SKIP_DIRS.has(e) || e.startsWith(".")) continue;
      const p = join(d, e);
      let st;
      try { st = statSync(p); } catch { continue; }
      if (st.isDirectory()) walk(p);
      else if (SOURCE_EXT.test(e) && st.size < 200_000) out.push(p);
    }
  };
  walk(dir);
  return out;
}

/** Key under which cjs/esm/dist copies of one module collide. */
function moduleKey(rel: string): string {
  const parts = rel.replace(/\.d\.(m|c)?ts$/, ".dts").replace(SOURCE_EXT, "").split("/");
  return parts.filter((p) => !BUILD_DIRS.has(p)).join("/") + (rel.includes(".d.") ? ".dts" : "");
}

export interface Doc { pkg: string; path: string; text: string }

export function buildCorpus(o: CorpusOptions): { manifest: unknown; counts: Record<string, number> } {
  mkdirSync(o.outDir, { recursive: true });
  const seen = new Set<string>();
  const contentSeen = new Set<string>();
  const included: Record<string, unknown>[] = [];
  const excluded: Record<string, unknown>[] = [];
  const docs: Record<"train" | "val" | "bench", Doc[]> = { train: [], val: [], bench: [] };
  let total = 0;
  const pkgs = findPackages(o.sourceDir);
  for (const p of pkgs) {
    if (seen.has(p.name)) continue;
    seen.add(p.name);
    if (!isPermissive(p.licence)) {
      excluded.push({ name: p.name, version: p.version, license: p.licence });
      continue;
    }
    if (total >= o.totalBytes) break;
    const split = splitOf(p.name);
    const keys = new Set<string>();
    let bytes = 0;
    let files = 0;
    // Hand-written sources first: src/ before lib/ before dist/.
    const rank = (r: string) => (r.startsWith("src/") ? 0 : r.startsWith("lib/") ? 1 : r.includes("dist/") ? 3 : 2);
    const sources = listSources(p.dir)
      .map((f) => relative(p.dir, f).split("\\").join("/"))
      .sort((a, b) => rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0));
    for (const rel of sources) {
      if (bytes >= o.perPackageBytes) break;
      const key = moduleKey(rel);
      if (keys.has(key)) continue;
      let text: string;
      try { text = readFileSync(join(p.dir, rel), "utf8"); } catch { continue; }
      text = text.replace(/\r\n/g, "\n").replace(/^#!.*\n/, "");
      if (looksGenerated(rel, text)) continue;
      const h = createHash("sha256").update(text.replace(/\s+/g, " ")).digest("hex");
      if (contentSeen.has(h)) continue;
      contentSeen.add(h);
      keys.add(key);
      docs[split].push({ pkg: p.name, path: rel, text });
      bytes += Buffer.byteLength(text);
      files++;
    }
    total += bytes;
    if (files > 0) included.push({ name: p.name, version: p.version, license: p.licence, split, files, bytes });
  }
  for (const s of ["train", "val", "bench"] as const) {
    writeFileSync(join(o.outDir, `${s}.jsonl`), docs[s].map((d) => JSON.stringify(d)).join("\n") + "\n");
    // Plain text for the tokenizer trainer.
    if (s === "train") writeFileSync(join(o.outDir, "train.txt"), docs[s].map((d) => d.text).join("\n"));
  }
  const licences: Record<string, number> = {};
  for (const p of included) licences[p.license as string] = (licences[p.license as string] ?? 0) + 1;
  const counts: Record<string, number> = {};
  for (const s of ["train", "val", "bench"] as const) {
    counts[`${s}_packages`] = included.filter((p) => p.split === s).length;
    counts[`${s}_files`] = docs[s].length;
    counts[`${s}_bytes`] = docs[s].reduce((a, d) => a + Buffer.byteLength(d.text), 0);
  }
  const manifest = {
    description: "Packages whose source files form the edgespec training corpus (models/pipeline/build_corpus.ts). Licence as read from each package's package.json.",
    accepted_licences: [...PERMISSIVE].sort(),
    counts,
    licences,
    packages: included,
    excluded_non_permissive: excluded,
  };
  if (o.manifestPath) writeFileSync(o.manifestPath, JSON.stringify(manifest, null, 1) + "\n");
  writeFileSync(join(o.outDir, "manifest.json"), JSON.stringify(manifest, null, 1) + "\n");
  const prompts = benchPrompts(docs.bench, 64);
  writeFileSync(join(o.outDir, "bench_prompts.jsonl"), prompts.map((p) => JSON.stringify(p)).join("\n") + "\n");
  if (o.benchPromptsPath) writeFileSync(o.benchPromptsPath, prompts.map((p) => JSON.stringify(p)).join("\n") + "\n");
  return { manifest, counts };
}

/** Prompts cut at a line boundary inside held-out files, with the real continuation. */
function benchPrompts(docs: Doc[], n: number) {
  const out: { id: string; package: string; path: string; prompt: string; reference: string }[] = [];
  const sorted = [...docs].filter((d) => d.text.length > 1500).sort((a, b) => hashInt(a.pkg + a.path) - hashInt(b.pkg + b.path));
  const perPkg: Record<string, number> = {};
  for (const d of sorted) {
    if (out.length >= n) break;
    if ((perPkg[d.pkg] ?? 0) >= 4) continue;
    perPkg[d.pkg] = (perPkg[d.pkg] ?? 0) + 1;
    const start = hashInt(d.path) % Math.max(1, d.text.length - 1400);
    const nl = d.text.indexOf("\n", start);
    if (nl < 0) continue;
    const body = d.text.slice(nl + 1);
    const cut = body.indexOf("\n", 800);
    if (cut < 0 || body.length < cut + 200) continue;
    out.push({ id: `bench-${out.length}`, package: d.pkg, path: d.path, prompt: body.slice(0, cut + 1), reference: body.slice(cut + 1, cut + 401) });
  }
  return out;
}
