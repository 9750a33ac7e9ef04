"""Draw docs/schedules.png and docs/schedules_ported.png, the schedule
pictures of the README.

    pip install ".[demo]" && python docs/make_schedule_figure.py

The five schedules are those of ``python -m fastopt.demo`` (SGD base rate
0.05) over 30 epochs of 43 steps; ReduceOnPlateau is told a validation loss
that improves for ten epochs and then stalls, so its reductions show.  The
second picture shows the shapes ported from torch and optax and
warmup-stable-decay, each for 600 steps at a peak rate of 0.1.
"""
import os

from fastopt import demo, schedules as S

EPOCHS, STEPS_PER_EPOCH = 30, 43


def main():
    val_loss = [0.08 + 0.9 * 0.7 ** min(e, 10) for e in range(EPOCHS)]
    series, momentum, marks = demo.simulate_schedules(EPOCHS * STEPS_PER_EPOCH,
                                                      STEPS_PER_EPOCH, val_loss)
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schedules.png")
    demo.plot_schedules(series, out, title="fastopt.schedules: the five schedules of the demo "
                        "(▼ = ReduceOnPlateau reduction)", momentum=momentum, marks=marks,
                        steps_per_epoch=STEPS_PER_EPOCH)
    print(f"wrote {out}")
    ported()


def ported(n=600, lr=0.1):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = {
        "torch": {
            "CosineAnnealingLR (rises past T_max)": S.CosineAnnealingLR(200, base_lr=lr),
            "CosineAnnealingWarmRestarts(50, 2)":
                S.CosineAnnealingWarmRestarts(50, 2, base_lr=lr),
            "OneCycleLR": S.OneCycleLR(lr, total_steps=n),
            "CyclicLR(triangular2)": S.CyclicLR(lr / 10, lr, 60, mode="triangular2"),
            "LinearLR then SWALR": S.Sequential(
                [S.LinearLR(0.1, 1.0, 100, base_lr=lr),
                 S.SWALR(lr / 4, 100, base_lr=lr)], [400]),
        },
        "optax and WSD": {
            "WarmupCosineDecay": S.WarmupCosineDecay(0.0, lr, 60, n, end_value=lr / 100),
            "WarmupCosineDecay(exponent=3)":
                S.WarmupCosineDecay(0.0, lr, 60, n, exponent=3.0),
            "LinearOneCycle": S.LinearOneCycle(n, lr),
            "WarmupExponentialDecay(end_value)":
                S.WarmupExponentialDecay(0.0, lr, 60, 60, 0.5, end_value=lr / 20),
            "WarmupStableDecay(1-sqrt)":
                S.WarmupStableDecay(lr, 60, 420, 120, decay_shape="1-sqrt"),
        },
    }
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), dpi=80, sharey=True)
    for ax, (title, items) in zip(axes, panels.items()):
        S.plot(items, n, ax=ax)
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.suptitle("fastopt.schedules: ported from torch and optax, and warmup-stable-decay")
    fig.tight_layout()
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schedules_ported.png")
    fig.savefig(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
