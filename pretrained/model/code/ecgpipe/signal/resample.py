"""``scipy.signal.resample_poly`` of a signal that arrives in consecutive blocks: the same output
(same filter, same zero padding at both ends), with memory that holds one block and the filter's
overlap instead of the whole input. ``ecgpipe predict`` resamples a day-long 10 kHz file this way.
"""
from __future__ import annotations

import math

import numpy as np


class StreamResampler:
    """``resample_poly(x, up, down)`` (its default Kaiser window and zero padding) of an input of
    ``n_in`` samples given to :meth:`push` in order; :meth:`finish` returns the last outputs."""

    def __init__(self, up: int, down: int, n_in: int):
        import scipy.signal  # here: the modules that import this one are imported by stages that never resample

        common = math.gcd(up, down)
        self.up, self.down, self.n_in = up // common, down // common, n_in
        # resample_poly's filter and alignment (scipy/signal/_signaltools.py); the zeros it appends
        # after the filter add nothing to any output, and the input's end is padded below instead
        max_rate = max(self.up, self.down)
        half_len = 10 * max_rate
        h = scipy.signal.firwin(2 * half_len + 1, 1.0 / max_rate, window=("kaiser", 5.0)) * self.up
        pre_pad = self.down - half_len % self.down
        self.h = np.concatenate([np.zeros(pre_pad), h])
        self.skip = (half_len + pre_pad) // self.down  # outputs of the padded filter before the first kept
        self.n_out = -(-n_in * self.up // self.down)
        self.buffer = np.zeros(0)
        self.buffer_start = 0  # input index of buffer[0]: always a multiple of down
        self.received = 0
        self.next_output = self.skip  # in upfirdn's output indices

    def push(self, block: np.ndarray) -> np.ndarray:
        """The outputs that the inputs so far determine."""
        self.buffer = np.concatenate([self.buffer, np.asarray(block, dtype=np.float64)])
        self.received += len(block)
        # output K needs inputs up to floor(K * down / up): those below `received` are all here
        return self._emit(min(-(-self.received * self.up // self.down), self.skip + self.n_out))

    def finish(self) -> np.ndarray:
        """The last outputs (their filter reaches past the input's end, where the signal is zero)."""
        if self.received != self.n_in:
            raise ValueError(f"{self.received} samples pushed, {self.n_in} announced")
        tail = len(self.h) // self.up + self.down
        self.buffer = np.concatenate([self.buffer, np.zeros(tail)])
        return self._emit(self.skip + self.n_out)

    def _emit(self, end: int) -> np.ndarray:
        if end <= self.next_output:
            return np.zeros(0)
        # upfirdn of the buffer: its output k is output k + offset of the whole input, because the
        # buffer starts at a multiple of down; outputs whose filter reaches before the buffer are
        # not asked for (the buffer keeps that overlap, or starts at the signal's start)
        import scipy.signal

        offset = self.buffer_start * self.up // self.down
        filtered = scipy.signal.upfirdn(self.h, self.buffer, self.up, self.down)
        out = filtered[self.next_output - offset: end - offset]
        self.next_output = end
        first_needed = max(0, -(-(end * self.down - len(self.h) + 1) // self.up))
        keep_from = max(self.buffer_start, first_needed - first_needed % self.down)
        self.buffer = self.buffer[keep_from - self.buffer_start:]
        self.buffer_start = keep_from
        return out
