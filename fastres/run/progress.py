"""Progress on rank 0: a tqdm bar on a terminal, one plain line every few seconds in a log file.

A bar redraws itself with carriage returns: in a batch system's log file or a pipe (stderr
or stdout not a terminal) each redraw is kept, tens of MB a day. There, `Progress` prints
one line about 10 s after training starts, then one every `--progress-seconds`:

    fastres: epoch 3/90 step 1234/5004 (12.3%) loss 4.213 1184 img/s ETA 2h13m

The loss is the last logged one (no extra device sync).
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

__all__ = ["FIRST_LINE_AFTER", "Progress", "format_eta"]

FIRST_LINE_AFTER = 10.0  # seconds: the first line comes early (with a rate worth reading), then every N seconds


def format_eta(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Progress:
    def __init__(self, enabled: bool, every_seconds: float, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty() and sys.stdout.isatty()  # a pipe gets no bar frames
        self.every = every_seconds
        self._bar = None
        self._last_line = time.monotonic() - every_seconds + min(FIRST_LINE_AFTER, every_seconds)
        self.loss: float | None = None
        self.img_s: float | None = None

    def start_epoch(self, epoch: int, epochs: int, steps: int, done: int = 0) -> None:
        self.epoch, self.epochs, self.steps, self.done = epoch, epochs, steps, done
        self._t0, self._done0 = time.monotonic(), done
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
        elif self.enabled and time.monotonic() - self._last_line >= self.every:
            self._line()

    def _line(self) -> None:
        now = time.monotonic()
        self._last_line = now
        rate = (self.done - self._done0) / max(now - self._t0, 1e-9)
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
