"""Beam search over a (batch, seq, vocab) tensor of per-position token probabilities.

At each position every beam is extended by every token, and the beam_size most probable
sequences (by summed log-probability) survive. Because the positions' probabilities here do
not depend on earlier tokens, the result is exactly the beam_size best sequences overall.
"""

from __future__ import annotations

import torch


def beam_search(probs: torch.Tensor, beam_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns tokens (batch, beam_size, seq) and their log-probabilities (batch, beam_size),
    best first."""
    batch, seq, vocab = probs.shape
    if not 1 <= beam_size <= vocab**seq:
        raise ValueError(f"beam_size={beam_size}: expected 1..{vocab**seq}")
    log_p = probs.log()
    first = min(beam_size, vocab)
    scores, tokens = log_p[:, 0].topk(first)  # (batch, beams)
    tokens = tokens[:, :, None]
    for i in range(1, seq):
        candidates = scores[:, :, None] + log_p[:, i, None, :]  # (batch, beams, vocab)
        width = min(beam_size, candidates.shape[1] * vocab)
        scores, flat = candidates.reshape(batch, -1).topk(width)
        parent, token = flat // vocab, flat % vocab
        history = tokens.gather(1, parent[:, :, None].expand(-1, -1, tokens.shape[2]))
        tokens = torch.cat([history, token[:, :, None]], dim=2)
    return tokens, scores
