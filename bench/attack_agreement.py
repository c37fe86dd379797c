"""Robust accuracy of sturdynet's FGSM / PGD / APGD vs torchattacks on the same inputs.

An MLP (the ``mlp`` model, 10 epochs, initial weights seeded 0) trained on digits, the 359
test images, L-inf.
PGD: no restarts, alpha = 2.5 eps / steps, the same random start (ours keeps each
sample's best iterate, torchattacks the last). APGD: 50 steps, the mean over seeds 0, 1, 2.

    OMP_NUM_THREADS=1 python bench/attack_agreement.py
"""
from __future__ import annotations

import torch
import torchattacks

from sturdynet.attacks import create_attack
from common import digits_mlp, robust_pct  # noqa: E402  (bench/ is on sys.path when run as a script)

SEEDS = (0, 1, 2)


def main() -> None:
    model, x, y, clean = digits_mlp(seed=0)  # the same model as the reference tests

    def acc(adv):
        return robust_pct(model, adv, y, clean)

    print(f"clean accuracy {100 * float(clean.float().mean()):.1f}%, {len(y)} test images\n")
    print("| attack | eps | sturdynet | torchattacks | difference |")
    print("|---|---|---|---|---|")
    for eps in (0.05, 0.1, 0.15):
        rows = [("FGSM", create_attack("fgsm", model, eps=eps), torchattacks.FGSM(model, eps=eps))]
        for steps in (10, 40):
            a = 2.5 * eps / steps
            rows.append((f"PGD-{steps}", create_attack("pgd", model, eps=eps, steps=steps, alpha=a),
                         torchattacks.PGD(model, eps=eps, alpha=a, steps=steps)))
        for loss in ("ce", "dlr"):  # one APGD run varies by ~1% with its random start: mean of 3 seeds
            rows.append((f"APGD-{loss.upper()}-50 (3 seeds)",
                         [create_attack("apgd", model, eps=eps, steps=50, loss=loss, seed=s) for s in SEEDS],
                         [torchattacks.APGD(model, eps=eps, steps=50, loss=loss, seed=s) for s in SEEDS]))
        for name, ours, theirs in rows:
            ours, theirs = (a if isinstance(a, list) else [a] for a in (ours, theirs))
            o = sum(acc(a(x, y)) for a in ours) / len(ours)
            torch.manual_seed(0)
            t = sum(acc(a(x, y)) for a in theirs) / len(theirs)
            print(f"| {name} | {eps} | {o:.1f} | {t:.1f} | {o - t:+.1f} |")

if __name__ == "__main__":
    main()
