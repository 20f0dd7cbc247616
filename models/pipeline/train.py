"""Pretraining, FastDraft-style generation and draft alignment.

  train.py pretrain --work W --name target --config '{...}' --steps N --batch B --seq S --lr LR
  train.py generate --work W --sequences N --prompt-len P --gen-len G --temperature T
  train.py align    --work W --steps N --batch B --lr LR

Every command is resumable: state is checkpointed under W/ckpt/ at least once a
minute and on SIGTERM/SIGINT, and a finished command leaves its result file.
"""
import argparse
import json
import math
import os
import signal
import time

import numpy as np
import torch
import torch.nn.functional as F

from data import setup_torch, log, load_tokens, random_windows, eval_windows, heldout_loss, token_byte_lengths, fmt_secs
from llama import LlamaConfig, LlamaForCausalLM

STOP = {"flag": False}


def _on_signal(signum, frame):
    STOP["flag"] = True


signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)


def save_atomic(obj, path):
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def lr_at(step, total, peak, warmup):
    if step < warmup:
        return peak * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


def load_model(work, name):
    cfg = LlamaConfig(**json.load(open(os.path.join(work, "models", name, "config.json")))["edgespec_config"])
    m = LlamaForCausalLM(cfg)
    m.load_state_dict(torch.load(os.path.join(work, "models", name, "weights.pt")))
    m.eval()
    return m


def save_model(work, name, model, extra):
    d = os.path.join(work, "models", name)
    os.makedirs(d, exist_ok=True)
    torch.save(model.state_dict(), os.path.join(d, "weights.pt"))
    cfg = model.config
    json.dump({"edgespec_config": cfg.__dict__, **extra}, open(os.path.join(d, "config.json"), "w"), indent=1)


def run_training(model, batches, total_steps, lr, warmup, ckpt_path, label, loss_fn, tokens_per_step):
    """Shared loop: AdamW, cosine schedule, grad clipping, progress, checkpoints."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    state = {"step": 0, "train_seconds": 0.0, "losses": []}
    if os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        state = ck["state"]
        log(f"[{label}] resumed at step {state['step']}/{total_steps}")
    last_ckpt = time.time()
    t_window = time.time()
    window_tokens = 0
    ema = None
    model.train()
    while state["step"] < total_steps:
        step = state["step"]
        t0 = time.time()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total_steps, lr, warmup)
        loss = loss_fn(batches(step))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        dt = time.time() - t0
        state["train_seconds"] += dt
        state["step"] += 1
        window_tokens += tokens_per_step
        lv = loss.item()
        ema = lv if ema is None else 0.95 * ema + 0.05 * lv
        state["losses"].append(round(lv, 4))
        if state["step"] % 10 == 0 or state["step"] == total_steps:
            el = time.time() - t_window
            tps = window_tokens / max(1e-6, el)
            left = (total_steps - state["step"]) * tokens_per_step / max(1e-6, tps)
            log(f"[{label}] step {state['step']}/{total_steps} loss {lv:.3f} (ema {ema:.3f}) lr {opt.param_groups[0]['lr']:.2e} "
                f"{tps:,.0f} tok/s  trained {fmt_secs(state['train_seconds'])}  left ~{fmt_secs(left)}")
            t_window = time.time()
            window_tokens = 0
        if time.time() - last_ckpt > 60 or STOP["flag"] or state["step"] == total_steps:
            save_atomic({"model": model.state_dict(), "opt": opt.state_dict(), "state": state}, ckpt_path)
            last_ckpt = time.time()
        if STOP["flag"]:
            log(f"[{label}] interrupted at step {state['step']}; rerun to resume")
            raise SystemExit(3)
    return state


def cmd_pretrain(a):
    work = a.work
    cfg = LlamaConfig(**json.loads(a.config))
    torch.manual_seed(a.seed)
    model = LlamaForCausalLM(cfg)
    log(f"[{a.name}] {model.num_params():,} parameters; {a.steps} steps x {a.batch} x {a.seq} tokens")
    train = load_tokens(os.path.join(work, "data", "train.bin"))

    def batches(step):
        return random_windows(train, a.batch, a.seq, seed=a.seed * 1_000_003 + step)

    def loss_fn(w):
        logits, _ = model(w[:, :-1])
        return F.cross_entropy(logits.reshape(-1, cfg.vocab_size), w[:, 1:].reshape(-1))

    os.makedirs(os.path.join(work, "ckpt"), exist_ok=True)
    state = run_training(model, batches, a.steps, a.lr, a.warmup, os.path.join(work, "ckpt", f"{a.name}.pt"), a.name, loss_fn, a.batch * a.seq)
    val = load_tokens(os.path.join(work, "data", "val.bin"))
    windows = eval_windows(val, a.eval_windows, a.seq)
    loss, bpb = heldout_loss(model, windows, token_byte_lengths(os.path.join(work, "tokenizer", "tokenizer.json")))
    log(f"[{a.name}] held-out loss {loss:.4f} nats/token, {bpb:.4f} bits/byte")
    save_model(work, a.name, model, {
        "params": model.num_params(), "train_steps": a.steps, "train_tokens": a.steps * a.batch * a.seq,
        "train_seconds": state["train_seconds"], "batch": a.batch, "seq": a.seq, "lr": a.lr,
        "heldout_loss": loss, "heldout_bpb": bpb, "loss_curve": state["losses"][::10],
    })


@torch.no_grad()
def cmd_generate(a):
    """FastDraft data: the target continues prompts taken from the training corpus.

    Besides each sampled token we keep the target's top-k distribution at that
    position, so alignment can also match the target's soft labels.
    """
    work = a.work
    out_path = os.path.join(work, "data", "aligned.pt")
    part_path = out_path + ".part"
    target = load_model(work, "target")
    train = load_tokens(os.path.join(work, "data", "train.bin"))
    done = torch.load(part_path) if os.path.exists(part_path) else {"seqs": [], "topi": [], "topp": []}
    nb = len(done["seqs"])
    total_batches = a.sequences // a.batch
    t_start = time.time()
    gen_tokens = 0
    while nb < total_batches:
        g = torch.Generator().manual_seed(a.seed * 7919 + nb)
        prompts = random_windows(train, a.batch, a.prompt_len - 1, seed=a.seed * 104729 + nb)
        ids = prompts
        logits, past = target(ids)
        seq = [ids]
        topi, topp = [], []
        for t in range(a.gen_len):
            p = torch.softmax(logits[:, -1] / a.temperature, dim=-1)
            nxt = torch.multinomial(p, 1, generator=g)
            tp, ti = p.topk(a.topk, dim=-1)
            topi.append(ti.to(torch.int16))
            topp.append(tp.to(torch.float16))
            seq.append(nxt)
            if t + 1 < a.gen_len:
                logits, past = target(nxt, past=past)
        done["seqs"].append(torch.cat(seq, dim=1).to(torch.int16))
        done["topi"].append(torch.stack(topi, dim=1))
        done["topp"].append(torch.stack(topp, dim=1))
        nb += 1
        gen_tokens += a.batch * a.gen_len
        el = time.time() - t_start
        tps = gen_tokens / el
        log(f"[generate] batch {nb}/{total_batches} {tps:,.0f} generated tok/s  left ~{fmt_secs((total_batches - nb) * a.batch * a.gen_len / tps)}")
        if nb % 5 == 0 or STOP["flag"]:
            save_atomic(done, part_path)
        if STOP["flag"]:
            raise SystemExit(3)
    res = {k: torch.cat(v) for k, v in done.items()}
    res["prompt_len"] = a.prompt_len
    res["temperature"] = a.temperature
    save_atomic(res, out_path)
    log(f"[generate] {res['seqs'].shape[0]} sequences x {a.gen_len} generated tokens")


def cmd_align(a):
    """FastDraft alignment: fine-tune the draft on the target's own continuations.

    Loss on generated positions: cross-entropy on the token the target sampled
    plus cross-entropy against the target's (renormalised top-k) distribution.
    """
    work = a.work
    draft = load_model(work, "draft")
    base_cfg = json.load(open(os.path.join(work, "models", "draft", "config.json")))
    data = torch.load(os.path.join(work, "data", "aligned.pt"))
    seqs = data["seqs"].long()
    topi = data["topi"].long()
    topp = data["topp"].float()
    topp = topp / topp.sum(-1, keepdim=True)
    P = data["prompt_len"]
    n = seqs.shape[0]
    # Mix in real corpus windows so the draft keeps its grip on prompts written by people.
    train = load_tokens(os.path.join(work, "data", "train.bin"))
    L = seqs.shape[1]

    def batches(step):
        rng = np.random.default_rng(a.seed * 31 + step)
        idx = torch.from_numpy(rng.integers(0, n, size=a.batch))
        real = random_windows(train, max(1, a.batch // 4), L - 1, seed=a.seed * 17 + step)
        return idx, real

    def loss_fn(b):
        idx, real = b
        s = seqs[idx]
        logits, _ = draft(s[:, :-1])
        gen_logits = logits[:, P - 1:]  # predicts s[:, P:]
        logq = torch.log_softmax(gen_logits, dim=-1)
        ce = F.nll_loss(logq.reshape(-1, logq.shape[-1]), s[:, P:].reshape(-1))
        soft = -(topp[idx] * logq.gather(-1, topi[idx])).sum(-1).mean()
        rl, _ = draft(real[:, :-1])
        real_ce = F.cross_entropy(rl.reshape(-1, rl.shape[-1]), real[:, 1:].reshape(-1))
        return 0.5 * ce + 0.5 * soft + 0.25 * real_ce

    state = run_training(draft, batches, a.steps, a.lr, a.warmup, os.path.join(work, "ckpt", "draft_aligned.pt"), "align", loss_fn,
                         a.batch * (L - P) + max(1, a.batch // 4) * (L - 1))
    val = load_tokens(os.path.join(work, "data", "val.bin"))
    windows = eval_windows(val, a.eval_windows, base_cfg["seq"])
    loss, bpb = heldout_loss(draft, windows, token_byte_lengths(os.path.join(work, "tokenizer", "tokenizer.json")))
    log(f"[align] draft held-out loss {loss:.4f} nats/token, {bpb:.4f} bits/byte")
    extra = {k: v for k, v in base_cfg.items() if k != "edgespec_config"}
    extra.update({"align_steps": a.steps, "align_seconds": state["train_seconds"], "align_sequences": int(n),
                  "align_generated_tokens": int(n * (L - P)), "heldout_loss_before_align": base_cfg["heldout_loss"],
                  "heldout_bpb_before_align": base_cfg["heldout_bpb"], "heldout_loss": loss, "heldout_bpb": bpb})
    save_model(work, "draft_aligned", draft, extra)


def main():
    setup_torch()
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    pt = sub.add_parser("pretrain")
    pt.add_argument("--name", required=True)
    pt.add_argument("--config", required=True)
    pt.add_argument("--steps", type=int, required=True)
    pt.add_argument("--batch", type=int, default=8)
    pt.add_argument("--seq", type=int, default=512)
    pt.add_argument("--lr", type=float, default=2e-3)
    pt.add_argument("--warmup", type=int, default=50)
    pt.add_argument("--eval-windows", type=int, default=128)
    gen = sub.add_parser("generate")
    gen.add_argument("--sequences", type=int, required=True)
    gen.add_argument("--batch", type=int, default=16)
    gen.add_argument("--prompt-len", type=int, default=96)
    gen.add_argument("--gen-len", type=int, default=128)
    gen.add_argument("--temperature", type=float, default=0.8)
    gen.add_argument("--topk", type=int, default=32)
    al = sub.add_parser("align")
    al.add_argument("--steps", type=int, required=True)
    al.add_argument("--batch", type=int, default=16)
    al.add_argument("--lr", type=float, default=1e-3)
    al.add_argument("--warmup", type=int, default=20)
    al.add_argument("--eval-windows", type=int, default=128)
    for s in (pt, gen, al):
        s.add_argument("--work", required=True)
        s.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    {"pretrain": cmd_pretrain, "generate": cmd_generate, "align": cmd_align}[a.cmd](a)


if __name__ == "__main__":
    main()
