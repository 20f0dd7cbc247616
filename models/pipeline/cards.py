"""Writes MODEL_CARD.md and SHA256SUMS for W/out/edgespec-{target,draft} from measured numbers."""
import argparse
import hashlib
import json
import os


def bytes_to_unicode():
    """GPT-2's byte <-> printable symbol table used by byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def decoder(tokenizer_json):
    vocab = json.load(open(tokenizer_json))["model"]["vocab"]
    inv = {i: t for t, i in vocab.items()}
    byte_of = {c: b for b, c in bytes_to_unicode().items()}

    def decode(ids):
        data = bytearray()
        for i in ids:
            t = inv[i]
            if t == "<|endoftext|>":
                data += t.encode()
            else:
                data += bytes(byte_of[c] for c in t)
        return data.decode("utf-8", errors="replace")
    return decode


def sha256sums(folder):
    lines = []
    for root, _, files in os.walk(folder):
        for f in sorted(files):
            if f == "SHA256SUMS":
                continue
            p = os.path.join(root, f)
            lines.append(f"{hashlib.sha256(open(p, 'rb').read()).hexdigest()}  {os.path.relpath(p, folder)}")
    open(os.path.join(folder, "SHA256SUMS"), "w").write("\n".join(sorted(lines, key=lambda l: l.split("  ")[1])) + "\n")


def mb(n):
    return f"{n / 1e6:.2f} MB"


def block(s):
    return "```js\n" + s.replace("```", "`\u200b``") + "\n```"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--work", required=True)
    p.add_argument("--elapsed-minutes", type=float, default=0)
    a = p.parse_args()
    w = a.work
    ev = json.load(open(os.path.join(w, "eval.json")))
    manifest = json.load(open(os.path.join(w, "corpus", "manifest.json")))
    stats = json.load(open(os.path.join(w, "data", "stats.json")))
    decode = decoder(os.path.join(w, "tokenizer", "tokenizer.json"))
    tgt = json.load(open(os.path.join(w, "out", "edgespec-target", "config.json")))
    dft = json.load(open(os.path.join(w, "out", "edgespec-draft", "config.json")))
    counts = manifest["counts"]
    lic = ", ".join(f"{k} {v}" for k, v in sorted(manifest["licences"].items(), key=lambda kv: -kv[1]))
    corpus = (f"Source files (.js/.ts and variants) of {counts['train_packages'] + counts['val_packages'] + counts['bench_packages']} permissively "
              f"licensed npm packages, licence read from each package's package.json (packages by licence: {lic}); "
              f"{len(manifest['excluded_non_permissive'])} packages with other licences were left out. Minified/generated files dropped, "
              f"cjs/esm copies deduplicated. Train {counts['train_bytes'] / 1e6:.1f} MB ({stats['train']['tokens']:,} tokens, "
              f"{counts['train_packages']} packages); held out as whole packages: validation {counts['val_bytes'] / 1e6:.1f} MB "
              f"({counts['val_packages']} packages), benchmark prompts {counts['bench_packages']} packages. Package, version, licence and "
              f"split of every package: `models/corpus/manifest.json`.")

    def size_table(folder):
        rows = []
        for root, _, files in os.walk(folder):
            for f in sorted(files):
                fp = os.path.join(root, f)
                rows.append(f"| `{os.path.relpath(fp, folder)}` | {os.path.getsize(fp):,} |")
        return "| file | bytes |\n|---|---|\n" + "\n".join(sorted(rows))

    def arch(c):
        return (f"Llama-style decoder: {c['num_hidden_layers']} layers, hidden {c['hidden_size']}, MLP {c['intermediate_size']} (SwiGLU), "
                f"{c['num_attention_heads']} query heads / {c['num_key_value_heads']} KV heads (GQA), head_dim {c['head_dim']}, RoPE theta "
                f"{c['rope_theta']:g}, RMSNorm, tied embeddings, vocab {c['vocab_size']}, max positions {c['max_position_embeddings']} "
                f"(trained on {c['edgespec']['seq']}-token windows).")

    def samples(role):
        out = []
        for i, s in enumerate(ev["samples"]):
            out.append(f"**Prompt {i + 1}** (tail of a held-out benchmark prompt):\n\n{block(decode(s['prompt_ids']))}\n")
            out.append(f"Greedy:\n\n{block(decode(s[role + '_greedy']))}\n")
            out.append(f"Temperature 0.8:\n\n{block(decode(s[role + '_t0.8']))}\n")
        return "\n".join(out)

    d, d0, t = ev["draft"], ev["draft_before_alignment"], ev["target"]
    goals = [
        ("draft int8 file <= 8 MB", f"{mb(os.path.getsize(os.path.join(w, 'out', 'edgespec-draft', 'onnx', 'model_quantized.onnx')))}",
         os.path.getsize(os.path.join(w, "out", "edgespec-draft", "onnx", "model_quantized.onnx")) <= 8e6),
        ("target held-out bits/byte <= 2.1", f"{t['heldout_bpb']:.3f}", t["heldout_bpb"] <= 2.1),
        ("top-1 agreement >= 65% after alignment", f"{100 * d['top1_agreement']:.1f}%", d["top1_agreement"] >= 0.65),
        ("mean accepted length (k=4, T=0.8) >= 2.5", f"{d['t0.8']['mean_accepted']:.2f} accepted drafts per round "
         f"({d['t0.8']['tokens_per_round']:.2f} tokens per round with the target's own token)", d["t0.8"]["mean_accepted"] >= 2.5),
    ]
    agreement = f"""| draft | top-1 agreement (real next tokens fed in) | mean accepted / round, greedy (k={ev['k']}) | tokens / round, greedy | mean accepted / round, T=0.8 | tokens / round, T=0.8 | held-out bits/byte |
|---|---|---|---|---|---|---|
| before alignment | {100 * d0['top1_agreement']:.1f}% | {d0['greedy']['mean_accepted']:.2f} | {d0['greedy']['tokens_per_round']:.2f} | {d0['t0.8']['mean_accepted']:.2f} | {d0['t0.8']['tokens_per_round']:.2f} | {d0['heldout_bpb']:.3f} |
| after FastDraft alignment (shipped) | {100 * d['top1_agreement']:.1f}% | {d['greedy']['mean_accepted']:.2f} | {d['greedy']['tokens_per_round']:.2f} | {d['t0.8']['mean_accepted']:.2f} | {d['t0.8']['tokens_per_round']:.2f} | {d['heldout_bpb']:.3f} |

"Mean accepted" counts drafted tokens the target accepted per verify round (0..{ev['k']});
"tokens / round" adds the target's correction or bonus token (1..{ev['k'] + 1}). Simulated
speculative decoding (PyTorch, same math as the ONNX graphs) on {ev['bench_prompts']} prompts
from held-out benchmark packages, {ev['bench_new_tokens']} new tokens each. Greedy acceptance
is inflated when both models fall into the same loop; top-1 agreement on
{ev['eval_tokens']:,} held-out tokens with the real next tokens fed in is the honest number."""
    goal_rows = "\n".join(f"| {g} | {v} | {'met' if ok else 'not met'} |" for g, v, ok in goals)
    te, de = tgt["edgespec"], dft["edgespec"]

    def mins(s):
        return f"{s / 60:.1f}"

    repro = """Reproduce: `npm run train:models` (resumable; logs in `models/.work/`), or
`npm run train:models -- --quick` for a minutes-long smoke run. See `models/README.md`."""
    target_card = f"""# edgespec-target

The verifier model of edgespec: runs at the origin with onnxruntime-node (fp32).
Trained from scratch on this project's corpus of permissively licensed npm
package sources; it writes code-shaped JavaScript/TypeScript and is a test
model for the speculative-decoding system, not a useful assistant.

## Model

- {arch(tgt)}
- Parameters: {te['params']:,}
- ONNX: `onnx/model.onnx` (fp32, opset 14), Hugging Face Optimum decoder layout with KV cache
  (`input_ids`, `attention_mask`, `position_ids`, `past_key_values.{{i}}.key/value` -> `logits`, `present.{{i}}.key/value`).
- Tokenizer: byte-level BPE, {tgt['vocab_size']} tokens, `<|endoftext|>` (id 0) as BOS/EOS; shared with edgespec-draft.

{size_table(os.path.join(w, 'out', 'edgespec-target'))}

## Training

- {te['train_steps']} steps x {te['batch']} x {te['seq']} tokens = {te['train_tokens']:,} training tokens, AdamW, peak LR {te['lr']}, cosine to 10%.
- Training time: {mins(te['train_seconds'])} minutes of wall time at `nice -n 10` on 2 CPU cores (PyTorch 1.13, OpenBLAS) shared
  with other jobs: throughput ranged from ~150 to ~1,100 tokens/s, so the stage stopped at its time budget, not its step count.
- Held-out (validation packages): loss {t['heldout_loss']:.3f} nats/token, **{t['heldout_bpb']:.3f} bits/byte**.

## Corpus

{corpus}

## Draft agreement (edgespec-draft against this model)

{agreement}

## Samples

{samples('target')}

{repro}
"""
    draft_card = f"""# edgespec-draft

The draft model of edgespec: runs in the edge Worker with onnxruntime-web (WASM,
int8, one thread) and proposes tokens that edgespec-target verifies.
Same tokenizer as the target; aligned to the target the FastDraft way.

## Model

- {arch(dft)}
- Parameters: {de['params']:,}
- ONNX: `onnx/model_quantized.onnx`: int8 weights (per output channel) with
  MatMulInteger + DynamicQuantizeLinear, the fastest format in onnxruntime-web's
  WASM backend; embeddings stay fp32. Same input/output layout as the target.

{size_table(os.path.join(w, 'out', 'edgespec-draft'))}

## Training

- Pretraining: {de['train_steps']} steps x {de['batch']} x {de['seq']} tokens = {de['train_tokens']:,} tokens, {mins(de['train_seconds'])} minutes,
  with edgespec-target as teacher (loss: 70% cross-entropy to the target's temperature-1 distribution, 30% to the corpus token).
- FastDraft alignment: the target continued {de['align_sequences']:,} prompts from the training corpus at temperature 0.8
  ({de['align_generated_tokens']:,} generated tokens, keeping the target's temperature-1 top-32 distribution at each position); the draft was
  fine-tuned {de['align_steps']} steps ({mins(de['align_seconds'])} minutes) on those continuations (cross-entropy to the sampled
  tokens, weight 0.25, and to the target's top-32 distribution, weight 1) plus real corpus windows labelled with the target's
  full distribution (weight 0.5).
- Held-out (validation packages): before alignment {d0['heldout_loss']:.3f} nats/token ({d0['heldout_bpb']:.3f} bits/byte),
  after {d['heldout_loss']:.3f} nats/token (**{d['heldout_bpb']:.3f} bits/byte**).

## Agreement with edgespec-target

{agreement}

## Goals (issue 3)

| goal | reached | |
|---|---|---|
{goal_rows}

## Corpus

{corpus}

## Samples

{samples('draft')}

{repro}
"""
    open(os.path.join(w, "out", "edgespec-target", "MODEL_CARD.md"), "w").write(target_card)
    open(os.path.join(w, "out", "edgespec-draft", "MODEL_CARD.md"), "w").write(draft_card)
    for name in ("edgespec-target", "edgespec-draft"):
        sha256sums(os.path.join(w, "out", name))
    print("model cards and SHA256SUMS written")


if __name__ == "__main__":
    main()
