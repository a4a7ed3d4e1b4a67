"""The compressor tree's plan, as arithmetic on bit-column heights: which counters each
level of ``rtl_gen.popcount`` instantiates, how many levels and pipeline stages the tree
has. The RTL builds from it and the resource model (``bnnhw.resources``) counts its
LUTs and registers from it, so the two cannot drift apart.
"""

from __future__ import annotations

__all__ = ["apply_level", "counter_groups", "final_heights", "last_level_groups",
           "tree_latency", "tree_plan"]


def counter_groups(height: int, fanin: int) -> list[int]:
    """How a greedy compressor level splits a column of ``height`` bits.

    Returns group sizes in order: 1 is a bit passed through unchanged, 3..6 a counter.
    Columns of at most two bits are left alone. A remainder of 4
    becomes a 3:2 counter plus a pass-through bit (two LUTs remove one bit, where a 4:3
    counter would spend three).
    """
    if height <= 2:
        return [1] * height
    groups = [fanin] * (height // fanin)
    rest = height % fanin
    if rest == 4:
        groups += [3, 1]
    elif rest == 5 and fanin == 6:
        groups += [5]
    elif rest >= 3:
        groups += [3] * (rest // 3) + [1] * (rest % 3)
    else:
        groups += [1] * rest
    return groups


def last_level_groups(heights: list[int]) -> list[list[int]]:
    """Groups that bring columns of at most three bits down to two in one level.

    Works from the LSB up, like Dadda's scheme: a column is compressed only as far as the
    carry it receives from the column below requires (3:2 counters on three bits, 2:2 on
    two), so no carry can push the next column back above two bits.
    """
    groups, carry = [], 0
    for h in heights:
        if h + carry <= 2:
            groups.append([1] * h)
            carry = 0
        else:
            groups.append([h])  # h is 2 or 3: one counter keeps a single sum bit here
            carry = 1
    if carry:
        groups.append([])
    return groups


def apply_level(heights: list[int], groups: list[list[int]]) -> list[int]:
    nxt = [0] * (len(groups) + 3)
    for k, gs in enumerate(groups):
        for g in gs:
            if g == 1:
                nxt[k] += 1
            else:
                for j in range(g.bit_length()):
                    nxt[k + j] += 1
    while nxt and nxt[-1] == 0:
        nxt.pop()
    return nxt


def tree_plan(heights: list[int], fanin: int = 6) -> list[list[list[int]]]:
    """Counter groups of every compressor level, for bit columns of ``heights``.

    Level ``l`` is a list with, per column (LSB first), the sizes of the groups its bits
    are split into, in order: 1 is a pass-through bit, 2..6 a counter emitting
    ``size.bit_length()`` bits into this and the next columns. The first level uses
    counters of at most ``fanin`` inputs, later ones at most 6. Levels compress greedily
    while some column holds more than three bits, then one last level brings every column
    down to at most two bits for the final carry-propagate adder.
    """
    plan: list[list[list[int]]] = []
    cur, cap = list(heights), fanin
    while max(cur, default=0) > 2:
        if max(cur) > 3:
            groups = [counter_groups(h, cap) for h in cur]
        else:
            groups = last_level_groups(cur)
        plan.append(groups)
        cur, cap = apply_level(cur, groups), 6
    return plan


def final_heights(heights: list[int], plan: list[list[list[int]]]) -> list[int]:
    """Column heights after all levels of ``plan``."""
    for groups in plan:
        heights = apply_level(heights, groups)
    return heights


def tree_latency(count: int, width: int = 1, levels_per_stage: int = 2,
                 fanin: int = 6) -> int:
    """Pipeline latency of the tree summing ``count`` ``width``-bit operands (see
    ``rtl_gen.popcount.Popcount``), without building it."""
    plan = tree_plan([count] * width, fanin)
    levels = len(plan) + int(max(final_heights([count] * width, plan), default=0) == 2)
    return max(1, -(-levels // levels_per_stage))
