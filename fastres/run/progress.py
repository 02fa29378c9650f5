"""Progress on rank 0: a tqdm bar on a terminal, one plain line every few seconds in a log file.

A bar redraws itself with carriage returns: in a batch system's log file or a pipe (stderr
or stdout not a terminal) each redraw is kept, tens of MB a day. There, `Progress` prints
one line about 10 s after training starts, then one every `--progress-seconds`:

    fastres: epoch 3/90 step 1234/5004 (12.3%) loss 4.213 1184 img/s ETA 2h13m

The loss is the last logged one (no extra device sync). The rate and the pace are the loop's one clock's
(fastres.run.timing.StepTimer, which the loop drives).

`Estimate` says once per attempt, about ESTIMATE_AFTER seconds into training, how long the rest of the run
takes here and how to make it shorter:

    fastres: estimate: the 3 epochs left take about 1h12m of training here (1184 img/s in bf16; ...)
"""

from __future__ import annotations

import sys

from tqdm import tqdm

from fastres.run.timing import StepTimer

__all__ = ["ESTIMATE_AFTER", "ESTIMATE_MIN_SECONDS", "FIRST_LINE_AFTER", "Estimate", "Progress", "format_eta"]

FIRST_LINE_AFTER = 10.0  # seconds: the first line comes early (with a rate worth reading), then every N seconds
ESTIMATE_AFTER = 10.0  # seconds of training (after WARM_STEPS) after which rank 0 says how long the run will take
ESTIMATE_MIN_SECONDS = 60.0  # ... unless the rest takes less than this: nothing worth planning around


def format_eta(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Progress:
    def __init__(self, enabled: bool, every_seconds: float, timer: StepTimer, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty() and sys.stdout.isatty()  # a pipe gets no bar frames
        self.every = every_seconds
        self.timer = timer
        self._bar = None
        self._last_line = timer.now() - every_seconds + min(FIRST_LINE_AFTER, every_seconds)
        self.loss: float | None = None
        self.img_s: float | None = None

    def start_epoch(self, epoch: int, epochs: int, steps: int, done: int = 0) -> None:
        self.epoch, self.epochs, self.steps, self.done = epoch, epochs, steps, done
        if self.tty:
            self._bar = tqdm(total=steps, initial=done, desc=f"epoch {epoch + 1}/{epochs}", unit="step",
                             file=self.stream, dynamic_ncols=True, leave=False)  # fmt: skip

    def update(self, loss: float | None = None, img_s: float | None = None, lr: float | None = None) -> None:
        """One step done; `loss`/`img_s`/`lr` when a log step just measured them."""
        self.done += 1
        if loss is not None:
            self.loss = loss
        if img_s is not None:
            self.img_s = img_s
        if self._bar is not None:
            self._bar.update(1)
            if loss is not None:
                self._bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{img_s or 0:.0f}", lr=f"{lr or 0:.3g}")
        elif self.enabled and self.timer.now() - self._last_line >= self.every:
            self._line()

    def _line(self) -> None:
        self._last_line = self.timer.now()
        rate = self.timer.steps / max(self.timer.epoch_seconds(), 1e-9)
        left = (self.steps - self.done) + (self.epochs - self.epoch - 1) * self.steps
        pct = 100.0 * self.done / max(self.steps, 1)
        parts = [f"fastres: epoch {self.epoch + 1}/{self.epochs} step {self.done}/{self.steps} ({pct:.1f}%)"]
        if self.loss is not None:  # none before the first logged step: left out, not shown as "-"
            parts.append(f"loss {self.loss:.3f}")
        if self.img_s is not None:
            parts.append(f"{self.img_s:.0f} img/s")
        parts.append(f"ETA {format_eta(left / rate) if rate > 0 else '-'}")
        print(" ".join(parts), file=self.stream, flush=True)

    def end_epoch(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class Estimate:
    """Once per attempt, on rank 0 (`enabled`): once ESTIMATE_AFTER seconds of an epoch's steady steps are timed
    (fastres.run.timing.StepTimer.steady), how long the rest of the run takes here, and how to shorten it."""

    def __init__(self, enabled: bool, epochs: int, steps_per_epoch: int, global_batch: int, precision: str):
        self.pending = enabled
        self.epochs, self.steps_per_epoch, self.global_batch, self.precision = (
            epochs,
            steps_per_epoch,
            global_batch,
            precision,
        )

    def line(self, timer: StepTimer, epoch: int, step: int) -> str | None:
        """After step `step` (1-based) of epoch `epoch` (0-based): the line to say, once; else None."""
        steady = timer.steady() if self.pending else None
        if steady is None or steady[0] < 2 or steady[1] < ESTIMATE_AFTER:
            return None
        self.pending = False  # once per attempt
        per_step = steady[1] / steady[0]
        spe = self.steps_per_epoch
        left = (spe - step) + (self.epochs - epoch - 1) * spe
        rate, epochs = self.global_batch / per_step, self.epochs - epoch
        if left * per_step < ESTIMATE_MIN_SECONDS:
            return None
        left_text = f"the {epochs} epochs left take" if epochs > 1 else "the epoch left takes"
        return (f"fastres: estimate: {left_text} about "
                f"{format_eta(left * per_step)} "
                f"of training here ({rate:.0f} img/s in {self.precision}; validation adds a little after each "
                f"epoch). Shorter: fewer "
                f"--epochs or a smaller --image-size (both cost accuracy), or --smoke for a check "
                f"in seconds")  # fmt: skip
