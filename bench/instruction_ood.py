"""How far held-out paraphrases and off-task sentences are from the training instructions, in the native
model's own instruction embedding (all-MiniLM-L6-v2): the measurement behind policy_node's out-of-distribution
threshold (``vla_policy.node_core.DEFAULT_OOD_DISTANCE_THRESHOLD``).

The training instructions are every filling of the simulator's training templates (``vla_sim.tasks``); the
distance of a sentence is what policy_node computes: 1 - cosine similarity to the nearest training
instruction (``vla_policy.node_core.nearest_instruction``). Groups:

- ``heldout``: every filling of the held-out paraphrase templates. The model should handle these (they are
  what ``vla-eval`` tests generalization with), so a good threshold lets them through.
- ``off_task``: sentences no tabletop block policy was trained for ("make me a coffee", "dance").
- ``near_task``: in the robot's world but not among its tasks (an unknown colour or object, a verb it never
  learned). Informative only: whether these should warn is a judgement call.

Two scenarios: a model trained on all five families, and a model trained on one family (then the other
families' training instructions are also out of its distribution: group ``other_family``).

Usage: python bench/instruction_ood.py [--quick] [--threads N]
The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

OFF_TASK = (
    "make me a coffee",
    "dance",
    "what is the weather like today",
    "tell me a joke",
    "sing a song",
    "turn off the lights",
    "open the front door",
    "write a poem about the sea",
    "fold the laundry",
    "water the plants",
    "call my mother",
    "play some music",
    "book a flight to paris",
    "walk the dog",
    "clean the kitchen",
    "wave hello",
    "go to sleep",
    "hello",
    "drive to the supermarket",
    "cook dinner for four people",
)
NEAR_TASK = (
    "pick up the pink block",
    "pick up the red ball",
    "pick up the cup",
    "open the drawer",
    "put the red block in the box",
    "throw the red block",
    "give me the red block",
    "stack all the blocks",
    "sort the blocks by colour",
    "move the arm to its home position",
    "rotate the blue block",
    "knock over the tower",
)
THRESHOLDS = (0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)


def filled_templates(
    templates: Sequence[str], slots: Sequence[str], colours: Sequence[str]
) -> Iterator[tuple[str, dict[str, str]]]:
    """(text, slot values) for every filling of the templates: distinct colours for the block slots, every
    direction and target."""
    from vla_sim.tasks import DIRECTIONS, TARGETS

    block_slots = [s for s in slots if s in ("block", "base", "top")]
    other = {"direction": sorted(DIRECTIONS), "target": list(TARGETS)}
    for blocks in itertools.permutations(colours, len(block_slots)):
        values = dict(zip(block_slots, blocks, strict=True))
        rest = [s for s in slots if s not in values]
        for combo in itertools.product(*(other[s] for s in rest)):
            filled = {**values, **dict(zip(rest, combo, strict=True))}
            yield from ((t.format(**filled), filled) for t in templates)


def fillings(templates: Sequence[str], slots: Sequence[str], colours: Sequence[str]) -> list[str]:
    """Every filling of the templates (:func:`filled_templates`), sorted, without repeats."""
    return sorted({text for text, _ in filled_templates(templates, slots, colours)})


def distances(
    embed: Callable[[Sequence[str]], np.ndarray], train: Sequence[str], queries: Sequence[str]
) -> list[tuple[float, str, str]]:
    """(distance, query, nearest training instruction) per query, as policy_node computes them."""
    from vla_policy.node_core import nearest_instruction

    references = embed(train)
    out = []
    for query, vector in zip(queries, embed(queries), strict=True):
        d, i = nearest_instruction(vector, references)
        out.append((d, query, train[i]))
    return out


def summary(rows: list[tuple[float, str, str]]) -> dict[str, float]:
    d = np.array([r[0] for r in rows])
    return {
        "n": len(d),
        "min": float(d.min()),
        "p5": float(np.percentile(d, 5)),
        "p50": float(np.median(d)),
        "p95": float(np.percentile(d, 95)),
        "max": float(d.max()),
        **{f"flagged_at_{t}": float(np.mean(d > t)) for t in THRESHOLDS},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="three colours instead of six (fewer fillings)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    a = p.parse_args()
    torch.set_num_threads(a.threads)

    from vla_policy.models.config import ModelConfig
    from vla_policy.models.encoders import InstructionEncoder
    from vla_sim.tasks import COLOURS, FAMILIES

    t0 = time.perf_counter()
    encoder = InstructionEncoder(
        ModelConfig(kind="native_vla", camera_names=("front",), state_dim=8, action_dim=8)
    )
    load_s = time.perf_counter() - t0

    def embed(texts: Sequence[str]) -> np.ndarray:
        return encoder(list(texts)).numpy()

    colours = ("red", "green", "blue") if a.quick else tuple(COLOURS)
    train = {f.value: fillings(s.train_templates, s.slots, colours) for f, s in FAMILIES.items()}
    heldout = {f.value: fillings(s.heldout_templates, s.slots, colours) for f, s in FAMILIES.items()}
    all_train = sorted(t for texts in train.values() for t in texts)
    all_heldout = sorted(t for texts in heldout.values() for t in texts)

    t0 = time.perf_counter()
    groups = {
        "heldout": distances(embed, all_train, all_heldout),
        "off_task": distances(embed, all_train, OFF_TASK),
        "near_task": distances(embed, all_train, NEAR_TASK),
    }
    per_family: dict[str, dict[str, list[tuple[float, str, str]]]] = {}
    for family, own in train.items():
        others = sorted(t for f, texts in train.items() if f != family for t in texts)
        per_family[family] = {
            "heldout": distances(embed, own, heldout[family]),
            "other_family": distances(embed, own, others),
            "off_task": distances(embed, own, OFF_TASK),
        }
    embed_s = time.perf_counter() - t0

    stats = {name: summary(rows) for name, rows in groups.items()}
    one_family = {
        name: summary([r for fam in per_family.values() for r in fam[name]])
        for name in ("heldout", "other_family", "off_task")
    }
    gap = (stats["heldout"]["max"], stats["off_task"]["min"])

    print(
        f"CPU {platform.processor() or platform.machine()}, {a.threads} threads, torch {torch.__version__}; "
        f"all-MiniLM-L6-v2 loaded in {load_s:.1f} s, {encoder.cache_size} sentences embedded in {embed_s:.1f} s"
    )
    print(f"{len(all_train)} training instructions ({len(colours)} colours), {len(all_heldout)} held-out\n")
    header = f"{'scenario / group':<30}{'n':>6}{'min':>7}{'p5':>7}{'p50':>7}{'p95':>7}{'max':>7}"
    header += "".join(f"{'>' + str(t):>7}" for t in THRESHOLDS)
    print(header)
    for scenario, table in (("all families", stats), ("one family", one_family)):
        for name, s in table.items():
            row = f"{scenario + ' / ' + name:<30}{s['n']:>6}"
            row += "".join(f"{s[k]:>7.3f}" for k in ("min", "p5", "p50", "p95", "max"))
            row += "".join(f"{s[f'flagged_at_{t}']:>7.0%}" for t in THRESHOLDS)
            print(row)
    print("(columns >t: share of the group above threshold t, i.e. flagged out of distribution)\n")

    print("all families: the farthest held-out paraphrases and the nearest off-task / near-task sentences")
    for d, query, nearest in sorted(groups["heldout"], reverse=True)[:5]:
        print(f"  heldout   {d:.3f}  {query!r}  ~ {nearest!r}")
    for name in ("off_task", "near_task"):
        for d, query, nearest in sorted(groups[name])[:4]:
            print(f"  {name:<9} {d:.3f}  {query!r}  ~ {nearest!r}")
    print(
        f"\nheld-out max {gap[0]:.3f} vs off-task min {gap[1]:.3f}: {'separated' if gap[0] < gap[1] else 'overlap'}"
    )

    print(
        json.dumps(
            {
                "bench": "instruction_ood",
                "quick": a.quick,
                "encoder": "all-MiniLM-L6-v2",
                "threads": a.threads,
                "train_instructions": len(all_train),
                "all_families": stats,
                "one_family": one_family,
                "heldout_max": gap[0],
                "off_task_min": gap[1],
                "separated": gap[0] < gap[1],
                "near_task": {q: round(d, 4) for d, q, _ in groups["near_task"]},
                "embed_s": embed_s,
            }
        )
    )


if __name__ == "__main__":
    main()
