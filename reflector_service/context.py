"""Which frames the reflector's LLM sees for each prefix o_1..n (the context window).

For a prefix of n frames (0-based indices 0..n-1) the context is the anchor frames
A(n) = {i < n-1 : i % s(n) == 0} followed by the current frame n-1, where the stride s(n) is 1
while n <= window and otherwise the smallest power of two with ceil((n-1) / s) <= window - 1.
So the context always holds the first frame, the newest frame, and at most ``window`` frames
spread evenly over the history. Strides only double, so a frame that leaves the anchor grid
never comes back: the incremental scorer keeps the anchors in the LLM's key/value cache, adds one
frame per step, and re-runs the surviving anchors (from cached frame embeddings) only when the
stride doubles, log2(T / window) times per episode.

The full scorer groups prefixes into "chains": consecutive prefixes whose contexts extend one
another by one frame share one LLM row (a causal LLM gives every prefix of a row at once).
"""

from __future__ import annotations

from dataclasses import dataclass


def stride(n: int, window: int) -> int:
    """Anchor stride s(n) for a prefix of ``n`` frames (see the module docstring)."""
    if n < 1:
        raise ValueError(f"a prefix needs at least one frame, got n={n}")
    if n <= window:
        return 1
    s = 1
    while -(-(n - 1) // s) > window - 1:
        s *= 2
    return s


def anchors(n: int, window: int) -> list[int]:
    """A(n): the history frames kept for a prefix of ``n`` frames (the current one excluded)."""
    s = stride(n, window)
    return list(range(0, n - 1, s))


def context(n: int, window: int) -> list[int]:
    """Frame indices in the LLM context for the prefix of ``n`` frames (at most ``window``)."""
    return anchors(n, window) + [n - 1]


@dataclass
class Chain:
    """One LLM row: ``frames`` in order; ``outputs[j] = n`` means the prefix of n frames is read
    after ``frames[j]`` (its context is ``frames[: j + 1]``)."""

    frames: list[int]
    outputs: dict[int, int]


def chains(num_frames: int, window: int) -> list[Chain]:
    """Cover the prefixes 1..num_frames with as few LLM rows as nesting allows.

    Args:
        num_frames: T, frames in the episode (>= 1).
        window: the context window (>= 2).
    Returns:
        Chains in order; every prefix n appears in exactly one chain's outputs.
    """
    if num_frames < 1:
        raise ValueError(f"an episode needs at least one frame, got {num_frames}")
    out: list[Chain] = []
    for n in range(1, num_frames + 1):
        ctx = context(n, window)
        last = out[-1] if out else None
        if last is not None and last.frames == ctx[:-1]:
            last.frames.append(ctx[-1])
        else:
            last = Chain(frames=list(ctx), outputs={})
            out.append(last)
        last.outputs[len(ctx) - 1] = n
    return out
