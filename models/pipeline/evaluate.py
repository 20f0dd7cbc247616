"""Draft-vs-target evaluation, with PyTorch (the same math the ONNX graphs compute).

- held-out loss and bits per byte (validation packages never seen in training);
- top-1 agreement with real next tokens fed in (teacher forcing on held-out text):
  honest about the draft, unlike greedy acceptance, which loops can inflate;
- mean accepted length per verify round, k = 4, simulated speculative decoding on
  the benchmark prompts (held-out packages): greedy (accept while the draft's
  token equals the target's argmax) and temperature 0.8 speculative sampling
  (accept x with prob min(1, p(x)/q(x)), residual resampling; Leviathan et al. 2023);
- the same for the draft before alignment, and int8-vs-fp32 top-1 agreement is
  checked in Node (check_onnx.ts).
Writes W/eval.json.
"""
import argparse
import json
import os
import time

import numpy as np
import torch

from data import setup_torch, log, load_tokens, eval_windows, heldout_loss, token_byte_lengths
from train import load_model


@torch.no_grad()
def top1_agreement(draft, target, windows, batch=8):
    agree = 0
    total = 0
    for i in range(0, len(windows), batch):
        w = windows[i:i + batch, :-1]
        dl, _ = draft(w)
        tl, _ = target(w)
        agree += (dl.argmax(-1) == tl.argmax(-1)).sum().item()
        total += w.numel()
    return agree / total


def crop(past, n):
    return [(k[:, :, :n], v[:, :, :n]) for k, v in past]


@torch.no_grad()
def speculative(draft, target, prompts, k, temperature, max_new, seed):
    """Simulated speculative decoding; returns mean accepted draft tokens per round."""
    # Single-token decoding steps are tiny: one thread avoids OpenMP spin-waits
    # (a second thread only adds overhead, and is ruinous on a busy machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _speculative(draft, target, prompts, k, temperature, max_new, seed)
    finally:
        torch.set_num_threads(threads)


def _speculative(draft, target, prompts, k, temperature, max_new, seed):
    g = torch.Generator().manual_seed(seed)
    rounds = 0
    accepted_total = 0
    generated = 0
    for prompt in prompts:
        ids = torch.tensor([prompt[-400:]])
        tl, tpast = target(ids[:, :-1])
        dl, dpast = draft(ids[:, :-1])
        seq = ids[0].tolist()
        n_ctx = len(seq) - 1  # both caches hold seq[:-1]
        out = 0
        while out < max_new:
            # Draft k tokens.
            last = torch.tensor([[seq[-1]]])
            proposals, qs = [], []
            dp = dpast
            for _ in range(k):
                logits, dp = draft(last, past=dp)
                lg = logits[0, -1]
                if temperature == 0:
                    x = int(lg.argmax())
                    qs.append(None)
                else:
                    q = torch.softmax(lg / temperature, -1)
                    x = int(torch.multinomial(q, 1, generator=g))
                    qs.append(q)
                proposals.append(x)
                last = torch.tensor([[x]])
            # Target verifies the last context token + k proposals in one pass.
            block = torch.tensor([[seq[-1]] + proposals])
            tlog, tp = target(block, past=tpast)
            tlog = tlog[0]
            acc = 0
            nxt = None
            for i, x in enumerate(proposals):
                if temperature == 0:
                    t = int(tlog[i].argmax())
                    if t == x:
                        acc += 1
                        continue
                    nxt = t
                    break
                p = torch.softmax(tlog[i] / temperature, -1)
                q = qs[i]
                if torch.rand(1, generator=g).item() < min(1.0, (p[x] / q[x]).item()):
                    acc += 1
                    continue
                r = torch.clamp(p - q, min=0)
                nxt = int(torch.multinomial(r / r.sum(), 1, generator=g))
                break
            if nxt is None:  # all accepted: bonus token from the target
                lg = tlog[k]
                nxt = int(lg.argmax()) if temperature == 0 else int(torch.multinomial(torch.softmax(lg / temperature, -1), 1, generator=g))
            rounds += 1
            accepted_total += acc
            new = proposals[:acc] + [nxt]
            # Caches keep everything up to (not including) the newest token.
            keep = n_ctx + 1 + acc
            tpast = crop(tp, keep)
            # The draft cache already holds seq[-1] and proposals[:k-1]; only a full
            # acceptance needs the last proposal fed in.
            dpast = crop(dp, keep) if acc < k else draft(torch.tensor([[proposals[-1]]]), past=dp)[1]
            seq += new
            n_ctx = keep
            out += len(new)
        generated += out
    return {"mean_accepted": accepted_total / rounds, "tokens_per_round": generated / rounds, "rounds": rounds}


def main():
    setup_torch()
    p = argparse.ArgumentParser()
    p.add_argument("--work", required=True)
    p.add_argument("--bench-prompts", type=int, default=48)
    p.add_argument("--bench-tokens", type=int, default=96)
    p.add_argument("--eval-windows", type=int, default=160)
    p.add_argument("--k", type=int, default=4)
    a = p.parse_args()
    w = a.work
    target = load_model(w, "target")
    drafts = {"draft_before_alignment": load_model(w, "draft"), "draft": load_model(w, "draft_aligned")}
    seq = json.load(open(os.path.join(w, "models", "target", "config.json")))["seq"]
    windows = eval_windows(load_tokens(os.path.join(w, "data", "val.bin")), a.eval_windows, seq)
    byte_len = token_byte_lengths(os.path.join(w, "tokenizer", "tokenizer.json"))
    prompts = json.load(open(os.path.join(w, "data", "bench_prompts.json")))[:a.bench_prompts]
    res = {"k": a.k, "bench_prompts": len(prompts), "bench_new_tokens": a.bench_tokens, "eval_tokens": int(windows[:, 1:].numel())}
    t0 = time.time()
    loss, bpb = heldout_loss(target, windows, byte_len)
    res["target"] = {"heldout_loss": loss, "heldout_bpb": bpb}
    log(f"[eval] target held-out loss {loss:.4f} bpb {bpb:.4f}")
    for name, d in drafts.items():
        loss, bpb = heldout_loss(d, windows, byte_len)
        r = {"heldout_loss": loss, "heldout_bpb": bpb, "top1_agreement": top1_agreement(d, target, windows)}
        log(f"[eval] {name}: loss {loss:.4f} bpb {bpb:.4f} top-1 agreement {r['top1_agreement']:.4f}")
        for label, temp in (("greedy", 0.0), ("t0.8", 0.8)):
            r[label] = speculative(d, target, prompts, a.k, temp, a.bench_tokens, seed=7)
            log(f"[eval] {name} {label}: mean accepted {r[label]['mean_accepted']:.3f} / {a.k}, tokens per round {r[label]['tokens_per_round']:.3f} ({r[label]['rounds']} rounds, {time.time() - t0:.0f} s)")
        res[name] = r
    # Sample completions (greedy and T=0.8) from the target and the draft for the cards.
    g = torch.Generator().manual_seed(11)
    samples = []
    for pr in prompts[:3]:
        item = {"prompt_ids": pr[-120:]}
        for name, m in (("target", target), ("draft", drafts["draft"])):
            for label, temp in (("greedy", 0.0), ("t0.8", 0.8)):
                ids = torch.tensor([pr[-120:]])
                logits, past = m(ids)
                out = []
                for _ in range(60):
                    lg = logits[0, -1]
                    x = int(lg.argmax()) if temp == 0 else int(torch.multinomial(torch.softmax(lg / temp, -1), 1, generator=g))
                    out.append(x)
                    logits, past = m(torch.tensor([[x]]), past=past)
                item[f"{name}_{label}"] = out
        samples.append(item)
    res["samples"] = samples
    json.dump(res, open(os.path.join(w, "eval.json"), "w"), indent=1)
    log(f"[eval] done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
