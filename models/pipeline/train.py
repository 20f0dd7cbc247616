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


def save_atomic(obj, path):
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def lr_at(step, progress, peak, warmup):
    """Linear warmup, then cosine from peak to 10% of peak over progress 0..1."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


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


def run_training(model, batches, total_steps, lr, warmup, ckpt_path, label, loss_fn, tokens_per_step, budget_minutes=None):
    """Shared loop: AdamW, cosine schedule, grad clipping, progress, checkpoints.

    Training ends after total_steps or, when budget_minutes is set, once that
    much training time has passed, whichever comes first: the machine is shared
    with test runs, so throughput varies several-fold and a time budget keeps
    the pipeline's duration bounded. The schedule follows the larger of the two
    progress fractions, so the learning rate always anneals by the end.
    """
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    state = {"step": 0, "train_seconds": 0.0, "losses": []}
    if os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        state = ck["state"]
        log(f"[{label}] resumed at step {state['step']}/{total_steps}")
    budget = budget_minutes * 60 if budget_minutes else None

    def progress():
        p = state["step"] / total_steps
        return max(p, state["train_seconds"] / budget) if budget else p

    last_ckpt = time.time()
    t_window = time.time()
    window_tokens = 0
    ema = None
    model.train()
    while progress() < 1.0 and not state.get("finished"):
        step = state["step"]
        t0 = time.time()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, progress(), lr, warmup)
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
        done = progress() >= 1.0
        if state["step"] % 10 == 0 or done:
            el = time.time() - t_window
            tps = window_tokens / max(1e-6, el)
            p = progress()
            left = state["train_seconds"] * (1 - p) / max(1e-6, p)
            log(f"[{label}] step {state['step']}/{total_steps} ({100 * p:.0f}%) loss {lv:.3f} (ema {ema:.3f}) lr {opt.param_groups[0]['lr']:.2e} "
                f"{tps:,.0f} tok/s  trained {fmt_secs(state['train_seconds'])}  left ~{fmt_secs(left)}")
            t_window = time.time()
            window_tokens = 0
        if done:
            state["finished"] = True
        if time.time() - last_ckpt > 60 or STOP["flag"] or done:
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

    teacher = load_model(work, a.distill_from) if a.distill_from else None
    if teacher is not None:
        log(f"[{a.name}] distilling from {a.distill_from} (soft-label weight {a.distill_weight})")

    def loss_fn(w):
        logits, _ = model(w[:, :-1])
        ce = F.cross_entropy(logits.reshape(-1, cfg.vocab_size), w[:, 1:].reshape(-1))
        if teacher is None:
            return ce
        # Soft labels from the target at temperature 1: the draft learns the
        # target's whole next-token distribution, which is what speculative
        # acceptance (sum of min(p, q)) rewards, not just the corpus token.
        with torch.no_grad():
            tl, _ = teacher(w[:, :-1])
            p = torch.softmax(tl, dim=-1)
        soft = -(p * torch.log_softmax(logits, dim=-1)).sum(-1).mean()
        return (1 - a.distill_weight) * ce + a.distill_weight * soft

    os.makedirs(os.path.join(work, "ckpt"), exist_ok=True)
    state = run_training(model, batches, a.steps, a.lr, a.warmup, os.path.join(work, "ckpt", f"{a.name}.pt"), a.name, loss_fn, a.batch * a.seq,
                         a.budget_minutes)
    val = load_tokens(os.path.join(work, "data", "val.bin"))
    windows = eval_windows(val, a.eval_windows, a.seq)
    loss, bpb = heldout_loss(model, windows, token_byte_lengths(os.path.join(work, "tokenizer", "tokenizer.json")))
    log(f"[{a.name}] held-out loss {loss:.4f} nats/token, {bpb:.4f} bits/byte")
    save_model(work, a.name, model, {
        "params": model.num_params(), "train_steps": state["step"], "train_tokens": state["step"] * a.batch * a.seq,
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
    budget = a.budget_minutes * 60 if a.budget_minutes else None
    spent = done.get("seconds", 0.0)
    while nb < total_batches and not (budget and spent >= budget and nb > 0):
        t_batch = time.time()
        g = torch.Generator().manual_seed(a.seed * 7919 + nb)
        prompts = random_windows(train, a.batch, a.prompt_len - 1, seed=a.seed * 104729 + nb)
        ids = prompts
        logits, past = target(ids)
        seq = [ids]
        topi, topp = [], []
        for t in range(a.gen_len):
            p = torch.softmax(logits[:, -1] / a.temperature, dim=-1)
            nxt = torch.multinomial(p, 1, generator=g)
            # Keep the temperature-1 distribution: the draft should match the
            # target's logits, so any sampling temperature applies to both alike.
            tp, ti = torch.softmax(logits[:, -1], dim=-1).topk(a.topk, dim=-1)
            topi.append(ti.to(torch.int16))
            topp.append(tp.to(torch.float16))
            seq.append(nxt)
            if t + 1 < a.gen_len:
                logits, past = target(nxt, past=past)
        done["seqs"].append(torch.cat(seq, dim=1).to(torch.int16))
        done["topi"].append(torch.stack(topi, dim=1))
        done["topp"].append(torch.stack(topp, dim=1))
        spent += time.time() - t_batch
        done["seconds"] = spent
        nb += 1
        gen_tokens += a.batch * a.gen_len
        el = time.time() - t_start
        tps = gen_tokens / el
        log(f"[generate] batch {nb}/{total_batches} {tps:,.0f} generated tok/s  left ~{fmt_secs((total_batches - nb) * a.batch * a.gen_len / tps)}")
        if nb % 2 == 0 or STOP["flag"]:
            save_atomic(done, part_path)
        if STOP["flag"]:
            raise SystemExit(3)
    res = {k: torch.cat(done[k]) for k in ("seqs", "topi", "topp")}
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

    target = load_model(work, "target")

    def loss_fn(b):
        idx, real = b
        s = seqs[idx]
        logits, _ = draft(s[:, :-1])
        gen_logits = logits[:, P - 1:]  # predicts s[:, P:]
        logq = torch.log_softmax(gen_logits, dim=-1)
        ce = F.nll_loss(logq.reshape(-1, logq.shape[-1]), s[:, P:].reshape(-1))
        soft = -(topp[idx] * logq.gather(-1, topi[idx])).sum(-1).mean()
        # Real text too, with the target's full distribution as the label, so
        # the draft keeps agreeing with the target on prompts people write.
        rl, _ = draft(real[:, :-1])
        with torch.no_grad():
            tp = torch.softmax(target(real[:, :-1])[0], dim=-1)
        real_soft = -(tp * torch.log_softmax(rl, dim=-1)).sum(-1).mean()
        return 0.25 * ce + soft + 0.5 * real_soft

    state = run_training(draft, batches, a.steps, a.lr, a.warmup, os.path.join(work, "ckpt", "draft_aligned.pt"), "align", loss_fn,
                         a.batch * (L - P) + max(1, a.batch // 4) * (L - 1), a.budget_minutes)
    val = load_tokens(os.path.join(work, "data", "val.bin"))
    windows = eval_windows(val, a.eval_windows, base_cfg["seq"])
    loss, bpb = heldout_loss(draft, windows, token_byte_lengths(os.path.join(work, "tokenizer", "tokenizer.json")))
    log(f"[align] draft held-out loss {loss:.4f} nats/token, {bpb:.4f} bits/byte")
    extra = {k: v for k, v in base_cfg.items() if k != "edgespec_config"}
    extra.update({"align_steps": state["step"], "align_seconds": state["train_seconds"], "align_sequences": int(n),
                  "align_generated_tokens": int(n * (L - P)), "heldout_loss_before_align": base_cfg["heldout_loss"],
                  "heldout_bpb_before_align": base_cfg["heldout_bpb"], "heldout_loss": loss, "heldout_bpb": bpb})
    save_model(work, "draft_aligned", draft, extra)


def main():
    setup_torch()
    # Checkpoint and stop cleanly on interruption (only when run as the trainer,
    # not when evaluate.py / export.py import helpers from here).
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
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
    pt.add_argument("--distill-from", default=None)
    pt.add_argument("--budget-minutes", type=float, default=None)
    pt.add_argument("--distill-weight", type=float, default=0.7)
    gen = sub.add_parser("generate")
    gen.add_argument("--sequences", type=int, required=True)
    gen.add_argument("--batch", type=int, default=16)
    gen.add_argument("--prompt-len", type=int, default=96)
    gen.add_argument("--gen-len", type=int, default=128)
    gen.add_argument("--temperature", type=float, default=0.8)
    gen.add_argument("--topk", type=int, default=32)
    gen.add_argument("--budget-minutes", type=float, default=None)
    al = sub.add_parser("align")
    al.add_argument("--steps", type=int, required=True)
    al.add_argument("--batch", type=int, default=16)
    al.add_argument("--lr", type=float, default=1e-3)
    al.add_argument("--warmup", type=int, default=20)
    al.add_argument("--eval-windows", type=int, default=128)
    al.add_argument("--budget-minutes", type=float, default=None)
    for s in (pt, gen, al):
        s.add_argument("--work", required=True)
        s.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    {"pretrain": cmd_pretrain, "generate": cmd_generate, "align": cmd_align}[a.cmd](a)


if __name__ == "__main__":
    main()
