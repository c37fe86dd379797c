"""FAB / FAB-T: agreement with torchattacks and minimal norms vs C&W, on digits.

The model of ``bench/attack_agreement.py`` (an ``mlp`` trained 10 epochs on digits,
here from seeded initial weights), the 359 test images. Robust accuracy of sturdynet's FAB and FAB-T (100 steps,
one restart, 9 targets: AutoAttack's standard FAB-T) against torchattacks' at each
eps; then the median smallest adversarial norm over the clean-correct images found by
one unbounded run of FAB, FAB-T and C&W-L2 (9 binary steps x 100, lr 0.1, c_init 0.1).

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python bench/attack_fab.py
"""
from __future__ import annotations

import time

import torch
import torchattacks

from sturdynet.attacks import create_attack
from common import digits_mlp, robust_pct  # noqa: E402  (bench/ is on sys.path when run as a script)

STEPS = 100


def main() -> None:
    model, x, y, clean = digits_mlp(seed=0)

    def acc(adv):
        return robust_pct(model, adv, y, clean)

    print(f"clean accuracy {100 * float(clean.float().mean()):.1f}%, {len(y)} test images, {STEPS} steps\n")
    print("| attack | norm | eps | sturdynet | torchattacks | difference | time ours / theirs (s) |")
    print("|---|---|---|---|---|---|---|")
    for norm, ta_norm, eps_values in (("linf", "Linf", (0.05, 0.1, 0.15)), ("l2", "L2", (0.5, 1.0))):
        for eps in eps_values:
            for name in ("fab", "fab-t"):
                t0 = time.perf_counter()
                o = acc(create_attack(name, model, eps=eps, norm=norm, steps=STEPS)(x, y))
                t1 = time.perf_counter()
                t = acc(torchattacks.FAB(model, norm=ta_norm, eps=eps, steps=STEPS, multi_targeted=name == "fab-t",
                                         n_classes=10)(x, y))
                t2 = time.perf_counter()
                print(f"| {name.upper()} | {norm} | {eps} | {o:.1f} | {t:.1f} | {o - t:+.1f} | "
                      f"{t1 - t0:.1f} / {t2 - t1:.1f} |", flush=True)

    print("\n| attack | norm | median smallest adversarial norm | found | time (s) |")
    print("|---|---|---|---|---|")
    xc, yc = x[clean], y[clean]
    runs = [("FAB", "fab", "linf", {}), ("FAB-T", "fab-t", "linf", {}), ("FAB", "fab", "l2", {}),
            ("FAB-T", "fab-t", "l2", {}),
            ("C&W", "cw", "l2", {"steps": 100, "binary_steps": 9, "lr": 0.1, "c_init": 0.1})]
    for label, name, norm, kw in runs:
        t0 = time.perf_counter()
        atk = create_attack(name, model, eps=float("inf"), norm=norm, **({"steps": STEPS} | kw))
        adv = atk(xc, yc)
        with torch.no_grad():
            fooled = model(adv).argmax(1) != yc
        norms = atk.min_norms[fooled]
        print(f"| {label} | {norm} | {float(norms.median()):.4f} | {float(fooled.float().mean()):.1%} | "
              f"{time.perf_counter() - t0:.1f} |", flush=True)


if __name__ == "__main__":
    main()
