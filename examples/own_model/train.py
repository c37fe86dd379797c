"""Train the example network with plain PyTorch and save its state_dict (no sturdynet involved).

    python examples/own_model/train.py [--out-dir examples/own_model] [--epochs 30]

Data: scikit-learn's digits (8x8 gray, embedded), pixels in [0, 1], normalized inside the
training loop with the mean/std the recipe declares as ``input_normalization``. The
script holds out a seeded 20% test split and writes both splits to ``digits_split.npz``
(the recipe's data), so sturdynet measures on images the network never trained on.
Writes ``net_digits.pt`` (the state_dict) and ``digits_split.npz`` into ``--out-dir``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from net import build_net  # noqa: E402

MEAN, STD = 0.30, 0.37  # digits pixel statistics; the recipe declares the same numbers


def digits_tensors(seed: int = 0):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    return x[perm], y[perm]


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out-dir", default=str(Path(__file__).resolve().parent))
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    x_all, y_all = digits_tensors(args.seed)
    n_test = len(y_all) // 5
    x, y = x_all[n_test:], y_all[n_test:]
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    import numpy as np

    np.savez(out / "digits_split.npz", x_train=x.numpy(), y_train=y.numpy(), x_test=x_all[:n_test].numpy(),
             y_test=y_all[:n_test].numpy())
    model = build_net(width=args.width)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(y))
        for i in range(0, len(y), 64):
            idx = order[i:i + 64]
            loss = F.cross_entropy(model((x[idx] - MEAN) / STD), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = float((model((x - MEAN) / STD).argmax(1) == y).float().mean())
        test_acc = float((model((x_all[:n_test] - MEAN) / STD).argmax(1) == y_all[:n_test]).float().mean())
    torch.save(model.state_dict(), out / "net_digits.pt")
    print(f"saved {out / 'net_digits.pt'}: training accuracy {acc:.3f}, held-out accuracy {test_acc:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
