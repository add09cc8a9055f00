"""The window cutter: windows of samples (training crops and scoring windows alike; only their starts
differ) or of spectrogram rows at given starts, batched."""
from __future__ import annotations

from collections.abc import Iterator

import torch


def cut(flat: torch.Tensor, starts: torch.Tensor, span: int) -> torch.Tensor:
    """The (len(starts), span) windows of the 1-D samples ``flat`` (one recording, or a store of
    many end to end) that begin at ``starts``."""
    return flat[starts[:, None] + torch.arange(span, device=starts.device)[None, :]]


def sample_windows(flat: torch.Tensor, starts: torch.Tensor, span: int, batch_size: int) -> Iterator[torch.Tensor]:
    """:func:`cut`, at most ``batch_size`` windows at a time."""
    for begin in range(0, len(starts), batch_size):
        yield cut(flat, starts[begin : begin + batch_size], span)


def chunk_positions(rows: torch.Tensor, windows: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For recordings ``rows`` with ``windows`` valid windows each: (row, start window) of every chunk.

    Each recording gives ``windows // size`` non-overlapping chunks from its start, the
    remainder dropped, in the order of ``rows`` (the notebook's ``ChunkedDataset``).
    """
    per_record = windows[rows] // size
    chunk_rows = torch.repeat_interleave(rows, per_record)
    # position of each chunk inside its recording: 0, 1, 2, ... restarting at every recording
    first = torch.cumsum(per_record, 0) - per_record
    within = torch.arange(len(chunk_rows)) - torch.repeat_interleave(first, per_record)
    return chunk_rows, within * size


def gather_windows(spectra: torch.Tensor, rows: torch.Tensor, starts: torch.Tensor, size: int) -> torch.Tensor:
    """``spectra[rows[i], starts[i]:starts[i]+size]`` for every i, as one (n, size, bins) tensor.

    ``spectra`` (recordings, windows, bins) must be contiguous: the windows are picked as rows of
    its (recordings * windows, bins) view with ``index_select``, which copies whole rows and is
    several times faster than advanced indexing with a 2-D index.
    """
    recordings, windows, bins = spectra.shape
    first = rows * windows + starts
    index = (first[:, None] + torch.arange(size, device=first.device)[None, :]).reshape(-1)
    return spectra.view(recordings * windows, bins).index_select(0, index).view(len(rows), size, bins)
