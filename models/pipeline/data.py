"""Token data, evaluation windows and shared helpers for the training scripts."""
import json
import math
import os
import sys
import time

import numpy as np
import torch


def setup_torch():
    # Debian's torch defaults to 1 thread; OpenBLAS with 2 is ~6x faster here (ARCHITECTURE.md: Platform facts, "Training the model pair here").
    torch.set_num_threads(int(os.environ.get("EDGESPEC_THREADS", "2")))
    torch.manual_seed(0)


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)
    sys.stdout.flush()


def load_tokens(path: str) -> np.ndarray:
    return np.memmap(path, dtype=np.uint16, mode="r")


def token_byte_lengths(tokenizer_json: str) -> np.ndarray:
    """UTF-8 bytes per token id: byte-level BPE maps each byte to one symbol."""
    vocab = json.load(open(tokenizer_json))["model"]["vocab"]
    out = np.zeros(len(vocab), dtype=np.int64)
    for tok, i in vocab.items():
        out[i] = 0 if tok == "<|endoftext|>" else len(tok)
    return out


def random_windows(tokens: np.ndarray, n: int, length: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(tokens) - length - 1, size=n)
    return torch.from_numpy(np.stack([tokens[s:s + length + 1].astype(np.int64) for s in starts]))


def eval_windows(tokens: np.ndarray, n: int, length: int) -> torch.Tensor:
    """Evenly spaced, non-overlapping windows: the same held-out set for every model."""
    n = min(n, (len(tokens) - 1) // (length + 1))
    step = (len(tokens) - 1) // n
    return torch.from_numpy(np.stack([tokens[i * step:i * step + length + 1].astype(np.int64) for i in range(n)]))


@torch.no_grad()
def heldout_loss(model, windows: torch.Tensor, byte_len: np.ndarray, batch: int = 8):
    """Mean loss in nats per token and bits per byte over held-out windows."""
    model.eval()
    nats = 0.0
    ntok = 0
    nbytes = 0
    for i in range(0, len(windows), batch):
        w = windows[i:i + batch]
        logits, _ = model(w[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1), reduction="sum")
        nats += loss.item()
        ntok += w[:, 1:].numel()
        nbytes += int(byte_len[w[:, 1:].numpy()].sum())
    return nats / ntok, nats / math.log(2) / max(1, nbytes)


def fmt_secs(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}h{(s % 3600) // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
