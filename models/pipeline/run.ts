// The model pipeline: corpus -> tokenizer -> target -> draft -> FastDraft
// alignment -> ONNX export -> int8 quantization -> checks -> evaluation -> cards.
//
//   npm run train:models                 full run (~100 min on 2 cores), installs into models/edgespec-*
//   npm run train:models -- --quick      every stage in a couple of minutes (tests); output stays in models/.work/quick
//   npm run train:models -- --from STAGE rerun from a stage on
//
// Each stage leaves a marker in models/.work/<run>/stages/; an interrupted run
// resumes at the first unfinished stage, and the training stages resume from
// their last checkpoint.
import { spawnSync, execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { buildCorpus } from "./build_corpus";
import { encodeDocs, trainTokenizer } from "./tokenizer";
import { checkModelFolder } from "./check_onnx";

const here = dirname(fileURLToPath(import.meta.url));
const modelsDir = resolve(here, "..");
const repoDir = resolve(modelsDir, "..");
const PY = process.env.EDGESPEC_PYTHON ?? "/usr/bin/python3";

export interface Plan {
  run: string;
  /** node_modules tree the corpus is read from; installed from corpus/packages.txt when absent */
  corpusSource: "install" | "project";
  perPackageBytes: number;
  totalBytes: number;
  vocabSize: number;
  maxPosition: number;
  /** budgetMinutes: training time after which a stage stops even short of its steps (the machine is shared). */
  target: { config: Record<string, number | boolean>; steps: number; batch: number; seq: number; lr: number; budgetMinutes?: number };
  draft: { config: Record<string, number | boolean>; steps: number; batch: number; seq: number; lr: number; budgetMinutes?: number };
  generate: { sequences: number; batch: number; promptLen: number; genLen: number; temperature: number; budgetMinutes?: number };
  align: { steps: number; batch: number; lr: number; budgetMinutes?: number };
  evalWindows: number;
  benchPrompts: number;
  benchTokens: number;
  install: boolean;
}

const common = { vocab_size: 4096, max_position_embeddings: 1024, rope_theta: 10000, tie_word_embeddings: true };

export const FULL: Plan = {
  run: "full",
  corpusSource: "install",
  perPackageBytes: 400_000,
  totalBytes: 60_000_000,
  vocabSize: 4096,
  maxPosition: 1024,
  target: {
    config: { ...common, hidden_size: 256, intermediate_size: 704, num_hidden_layers: 6, num_attention_heads: 8, num_key_value_heads: 4, head_dim: 32 },
    steps: 950, batch: 4, seq: 512, lr: 2e-3, budgetMinutes: 40,
  },
  draft: {
    config: { ...common, hidden_size: 128, intermediate_size: 352, num_hidden_layers: 4, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 32 },
    steps: 500, batch: 4, seq: 512, lr: 3e-3, budgetMinutes: 16,
  },
  generate: { sequences: 1024, batch: 64, promptLen: 96, genLen: 128, temperature: 0.8, budgetMinutes: 6 },
  align: { steps: 250, batch: 16, lr: 1e-3, budgetMinutes: 10 },
  evalWindows: 160,
  benchPrompts: 32,
  benchTokens: 64,
  install: true,
};

export const QUICK: Plan = {
  run: "quick",
  corpusSource: "project",
  perPackageBytes: 40_000,
  totalBytes: 2_000_000,
  vocabSize: 1024,
  maxPosition: 1024,
  target: {
    config: { ...common, vocab_size: 1024, hidden_size: 64, intermediate_size: 176, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16 },
    steps: 30, batch: 4, seq: 128, lr: 3e-3,
  },
  draft: {
    config: { ...common, vocab_size: 1024, hidden_size: 32, intermediate_size: 88, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1, head_dim: 16 },
    steps: 30, batch: 4, seq: 128, lr: 3e-3,
  },
  generate: { sequences: 32, batch: 16, promptLen: 32, genLen: 32, temperature: 0.8 },
  align: { steps: 10, batch: 8, lr: 1e-3 },
  evalWindows: 8,
  benchPrompts: 4,
  benchTokens: 24,
  install: false,
};

function parseArgs(argv: string[]) {
  const a: { quick: boolean; from?: string; only?: string; until?: string; run?: string; dataFrom?: string; install?: boolean; scale?: number } = { quick: false };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    if (k === "--quick") a.quick = true;
    else if (k === "--from") a.from = argv[++i];
    else if (k === "--only") a.only = argv[++i];
    else if (k === "--until") a.until = argv[++i];
    else if (k === "--run") a.run = argv[++i];
    else if (k === "--data-from") a.dataFrom = argv[++i];
    else if (k === "--install") a.install = true;
    else if (k === "--no-install") a.install = false;
    else if (k === "--scale") a.scale = Number(argv[++i]);
    else throw new Error(`unknown argument ${k}`);
  }
  return a;
}

function log(msg: string) {
  console.log(`${new Date().toISOString().slice(11, 19)} ${msg}`);
}

export function py(script: string, args: string[], nice = true) {
  const cmd = nice ? "nice" : PY;
  const full = nice ? ["-n", "10", PY, join(here, script), ...args] : [join(here, script), ...args];
  const r = spawnSync(cmd, full, { stdio: "inherit", cwd: here, env: {
    ...process.env,
    PYTHONUNBUFFERED: "1",
    // glibc serves every tensor >= 32 MB (logits, attention scores) with a fresh
    // mmap and page-faults it in on each step: measured 30-43% system time in
    // training. jemalloc keeps those pages.
    ...(jemalloc() ? { LD_PRELOAD: jemalloc() } : {}),
  } });
  if (r.status !== 0) throw new Error(`${script} ${args[0]} failed (exit ${r.status})`);
}

let jemallocPath: string | null | undefined;
function jemalloc(): string | null {
  if (jemallocPath === undefined) {
    const r = spawnSync("ldconfig", ["-p"], { encoding: "utf8" });
    jemallocPath = /libjemalloc\.so\.2 .*=> (\S+)/.exec(r.stdout ?? "")?.[1] ?? null;
  }
  return jemallocPath;
}

export function ensurePython() {
  const probe = spawnSync(PY, ["-c", "import torch, onnx, numpy"], { stdio: "ignore" });
  if (probe.status === 0 && jemalloc()) return;
  const pkgs = ["python3-torch", "python3-onnx", "python3-numpy", "libopenblas0-pthread", "libjemalloc2"];
  log(`installing Debian packages ${pkgs.join(" ")}`);
  execFileSync("apt-get", ["update"], { stdio: "inherit" });
  execFileSync("apt-get", ["install", "-y", ...pkgs], { stdio: "inherit" });
  jemallocPath = undefined;
}

function installCorpusPackages(dir: string) {
  if (existsSync(join(dir, "node_modules"))) return;
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "package.json"), JSON.stringify({ name: "edgespec-corpus", private: true, version: "0.0.0" }));
  // Pin the top-level versions recorded by the last build, when there is one.
  const manifestPath = join(modelsDir, "corpus", "manifest.json");
  const pinned: Record<string, string> = {};
  if (existsSync(manifestPath)) {
    for (const p of JSON.parse(readFileSync(manifestPath, "utf8")).packages as { name: string; version: string }[]) pinned[p.name] = p.version;
  }
  const names = readFileSync(join(modelsDir, "corpus", "packages.txt"), "utf8").split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
  const specs = names.map((n) => (pinned[n] ? `${n}@${pinned[n]}` : n));
  log(`npm install --ignore-scripts of ${specs.length} corpus packages (with their dependencies)`);
  execFileSync("npm", ["install", "--ignore-scripts", "--no-audit", "--no-fund", "--legacy-peer-deps", ...specs], { cwd: dir, stdio: "inherit" });
}

export async function runPipeline(plan: Plan, opts: { from?: string; only?: string; until?: string; dataFrom?: string }) {
  const work = join(modelsDir, ".work", plan.run);
  const stagesDir = join(work, "stages");
  mkdirSync(stagesDir, { recursive: true });
  const t0 = Date.now();
  const stages: [string, () => Promise<void> | void][] = [];
  const stage = (name: string, fn: () => Promise<void> | void) => stages.push([name, fn]);
  const dataDir = join(work, "data");
  const tokDir = join(work, "tokenizer");
  const budget = (m?: number) => (m ? ["--budget-minutes", String(m)] : []);
  const trainArgs = (r: Plan["target"], name: string) => [
    "pretrain", "--work", work, "--name", name, "--config", JSON.stringify(r.config), "--steps", String(r.steps),
    "--batch", String(r.batch), "--seq", String(r.seq), "--lr", String(r.lr), "--eval-windows", String(plan.evalWindows),
    ...budget(r.budgetMinutes),
  ];

  stage("deps", () => ensurePython());
  stage("corpus", () => {
    if (opts.dataFrom) {
      const src = join(modelsDir, ".work", opts.dataFrom);
      cpSync(join(src, "corpus"), join(work, "corpus"), { recursive: true });
      return;
    }
    let source: string;
    if (plan.corpusSource === "install") {
      installCorpusPackages(join(modelsDir, ".work", "npm"));
      source = join(modelsDir, ".work", "npm", "node_modules");
    } else source = join(repoDir, "node_modules");
    const committed = plan.install;
    const { counts } = buildCorpus({
      sourceDir: source, outDir: join(work, "corpus"), perPackageBytes: plan.perPackageBytes, totalBytes: plan.totalBytes,
      manifestPath: committed ? join(modelsDir, "corpus", "manifest.json") : undefined,
      benchPromptsPath: committed ? join(modelsDir, "corpus", "bench_prompts.jsonl") : undefined,
    });
    log(`corpus: ${JSON.stringify(counts)}`);
  });
  stage("tokenizer", () => {
    if (opts.dataFrom) {
      cpSync(join(modelsDir, ".work", opts.dataFrom, "tokenizer"), tokDir, { recursive: true });
      return;
    }
    trainTokenizer([join(work, "corpus", "train.txt")], tokDir, plan.vocabSize, plan.maxPosition);
    log(`tokenizer: vocab ${plan.vocabSize} written to ${tokDir}`);
  });
  stage("encode", async () => {
    mkdirSync(dataDir, { recursive: true });
    const stats: Record<string, unknown> = {};
    for (const s of ["train", "val", "bench"]) {
      stats[s] = await encodeDocs(tokDir, join(work, "corpus", `${s}.jsonl`), join(dataDir, `${s}.bin`));
      log(`encoded ${s}: ${JSON.stringify(stats[s])}`);
    }
    writeFileSync(join(dataDir, "stats.json"), JSON.stringify(stats, null, 1));
    const { loadTokenizer } = await import("./tokenizer");
    const tok = loadTokenizer(tokDir);
    const prompts = readFileSync(join(work, "corpus", "bench_prompts.jsonl"), "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l));
    const ids = [];
    for (const p of prompts.slice(0, plan.benchPrompts)) ids.push((await tok.encode(p.prompt, null, { addSpecialTokens: false })).getIds());
    writeFileSync(join(dataDir, "bench_prompts.json"), JSON.stringify(ids));
  });
  stage("train-target", () => py("train.py", trainArgs(plan.target, "target")));
  stage("train-draft", () => py("train.py", [...trainArgs(plan.draft, "draft"), "--distill-from", "target"]));
  stage("generate", () => py("train.py", ["generate", "--work", work, "--sequences", String(plan.generate.sequences), "--batch", String(plan.generate.batch),
    "--prompt-len", String(plan.generate.promptLen), "--gen-len", String(plan.generate.genLen), "--temperature", String(plan.generate.temperature), ...budget(plan.generate.budgetMinutes)]));
  stage("align", () => py("train.py", ["align", "--work", work, "--steps", String(plan.align.steps), "--batch", String(plan.align.batch), "--lr", String(plan.align.lr),
    "--eval-windows", String(plan.evalWindows), ...budget(plan.align.budgetMinutes)]));
  stage("export", () => py("export.py", ["models", "--work", work]));
  stage("check", async () => {
    for (const name of ["edgespec-target", "edgespec-draft"]) await checkModelFolder(join(work, "out", name), join(work, "out", `${name}.reference.json`));
  });
  stage("evaluate", () => py("evaluate.py", ["--work", work, "--bench-prompts", String(plan.benchPrompts), "--bench-tokens", String(plan.benchTokens),
    "--eval-windows", String(plan.evalWindows)]));
  stage("cards", () => py("cards.py", ["--work", work, "--elapsed-minutes", String(((Date.now() - t0) / 60000).toFixed(1))], false));
  stage("install", () => {
    if (!plan.install) return;
    for (const name of ["edgespec-target", "edgespec-draft"]) {
      const dst = join(modelsDir, name);
      rmSync(dst, { recursive: true, force: true });
      cpSync(join(work, "out", name), dst, { recursive: true });
      log(`installed ${name}: ${JSON.stringify(readFileSync(join(dst, "SHA256SUMS"), "utf8").trim().split("\n").length)} files`);
    }
  });

  const names = stages.map((s) => s[0]);
  for (const k of [opts.from, opts.only, opts.until]) if (k && !names.includes(k)) throw new Error(`unknown stage ${k}; stages: ${names.join(", ")}`);
  const fromIdx = opts.from ? names.indexOf(opts.from) : 0;
  const untilIdx = opts.until ? names.indexOf(opts.until) : names.length - 1;
  for (const [idx, [name, fn]] of stages.entries()) {
    if (idx < fromIdx || idx > untilIdx || (opts.only && opts.only !== name)) continue;
    const marker = join(stagesDir, `${name}.done`);
    if (opts.from || opts.only) rmSync(marker, { force: true });
    if (existsSync(marker)) {
      log(`[stage ${name}] done already`);
      continue;
    }
    const ts = Date.now();
    log(`[stage ${name}] start (pipeline elapsed ${((ts - t0) / 60000).toFixed(1)} min)`);
    await fn();
    writeFileSync(marker, new Date().toISOString() + "\n");
    log(`[stage ${name}] done in ${((Date.now() - ts) / 1000).toFixed(0)} s`);
  }
  log(`pipeline ${plan.run} finished in ${((Date.now() - t0) / 60000).toFixed(1)} min`);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const a = parseArgs(process.argv.slice(2));
  const base = a.quick ? QUICK : FULL;
  const plan: Plan = structuredClone(base);
  if (a.run) plan.run = a.run;
  if (a.install !== undefined) plan.install = a.install;
  if (a.scale) {
    // Shorter training with the same models (e.g. a preview before the full run).
    for (const r of [plan.target, plan.draft]) r.steps = Math.max(10, Math.round(r.steps * a.scale));
    plan.align.steps = Math.max(5, Math.round(plan.align.steps * a.scale));
    plan.generate.sequences = Math.max(plan.generate.batch, Math.round((plan.generate.sequences * a.scale) / plan.generate.batch) * plan.generate.batch);
  }
  runPipeline(plan, a).catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
