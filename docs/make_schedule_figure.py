"""Draw docs/schedules.png, the schedule picture of the README.

    pip install ".[demo]" && python docs/make_schedule_figure.py

The five schedules are those of ``python -m fastopt.demo`` (SGD base rate
0.05) over 30 epochs of 43 steps; ReduceOnPlateau is told a validation loss
that improves for ten epochs and then stalls, so its reductions show.
"""
import os

from fastopt import demo

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


if __name__ == "__main__":
    main()
