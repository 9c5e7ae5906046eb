"""Does the frozen instruction embedding say which task a held-out paraphrase asks for? Measured without any
policy: how well the training instructions' embeddings (all-MiniLM-L6-v2, as the native VLA reads them) carry
over to the held-out paraphrases, for one family alone and for several trained together.

Training instructions: every filling of the families' training templates (``vla_sim.tasks``); held-out: every
filling of their held-out templates. Per scenario (each family alone, then all of them together) and per family:

- ``cos raw`` / ``cos proj``: mean cosine similarity of a held-out instruction to its nearest training
  instruction, as embedded and after the native VLA's ``instruction_subspace`` projection (onto the span of the
  training embeddings, renormalized): how far off the training data a paraphrase lands;
- ``nn task``: the nearest training instruction (after the projection) states the same task (family and slots);
- ``aligned``: the training instruction ``instruction_nearest`` acts on (``vla_policy.node_core.InstructionGrounding``:
  the best order-preserving alignment of contextual token embeddings) states the same task;
- ``fresh``: the same, ``aligned``, on paraphrases that are in neither split (``FRESH_TEMPLATES`` below, written
  after the alignment was chosen on the held-out split and never used to choose anything);
- ``lin family`` / ``lin colour``: a ridge read-out fitted on the training embeddings to the family / the moved
  block's colour, scored on the held-out ones: what a linear layer over the embedding could learn at best;
- ``lin goal`` / ``tok goal``: the same for where the block must go (stack's base block, place's target, push's
  direction; ``GOAL_SLOTS``), read by the ridge off the pooled embedding, and by one learned query that
  attends over the contextual token embeddings (:func:`token_attention_accuracy`): whether the pooled sentence
  vector, which the native VLA's FiLM reads, can say which of two named blocks is the base.

Usage: python bench/instruction_grounding.py [--families pick push place stack] [--threads N]
The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence

import torch
from instruction_ood import (  # bench/ is on sys.path when this file runs as a script
    filled_templates,
    fillings,
)

# Paraphrases in neither of the simulator's splits, for the families the bench knows.
FRESH_TEMPLATES = {
    "pick": ("please pick up the {block} one", "take the {block} cube and raise it", "can you lift the {block} block up"),
    "place": ("put the {block} cube inside the {target}", "drop the {block} one into the {target}",
              "i want the {block} block in the {target}"),
    "push": ("nudge the {block} block to the {direction}", "push the {block} cube over to the {direction}",
             "gently slide the {block} cube to the {direction}"),
    "stack": ("place the {block} cube on the {base} cube", "put {block} on top of {base}", "stack {block} onto {base}"),
}  # fmt: skip


def ridge_accuracy(
    train_x: torch.Tensor, train_y: list[str], test_x: torch.Tensor, test_y: list[str]
) -> list[bool]:
    classes = sorted(set(train_y))
    onehot = torch.zeros(len(train_y), len(classes))
    onehot[torch.arange(len(train_y)), [classes.index(y) for y in train_y]] = 1.0
    x = torch.cat([train_x, torch.ones(len(train_x), 1)], dim=1)
    weights = torch.linalg.solve(x.T @ x + 1e-2 * torch.eye(x.shape[1]), x.T @ onehot)
    pred = (torch.cat([test_x, torch.ones(len(test_x), 1)], dim=1) @ weights).argmax(dim=1)
    return [classes[p] == y for p, y in zip(pred.tolist(), test_y, strict=True)]


# The slot that says where the moved block must go, per family that has one.
GOAL_SLOTS = {"place": "target", "push": "direction", "stack": "base", "stack_two": "base"}


def token_attention_accuracy(
    train_tokens: list[torch.Tensor],
    train_y: list[str],
    test_tokens: list[torch.Tensor],
    test_y: list[str],
    steps: int = 600,
) -> list[bool]:
    """A query that attends over each sentence's [n, d] token embeddings, then a linear read-out to the class;
    fitted on the training sentences (Adam, full batch, seed 0), scored on the held-out ones."""
    torch.manual_seed(0)
    classes = sorted(set(train_y))

    def padded(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        n = max(len(r) for r in rows)
        x, mask = torch.zeros(len(rows), n, rows[0].shape[1]), torch.zeros(len(rows), n, dtype=torch.bool)
        for i, r in enumerate(rows):
            x[i, : len(r)], mask[i, : len(r)] = r, True
        return x, mask

    dim = train_tokens[0].shape[1]
    query, keys, readout = (
        torch.nn.Parameter(0.1 * torch.randn(dim)),
        torch.nn.Linear(dim, dim),
        torch.nn.Linear(dim, len(classes)),
    )
    optimizer = torch.optim.Adam([query, *keys.parameters(), *readout.parameters()], lr=3e-3)

    def logits(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = (keys(x) @ query).masked_fill(~mask, -1e9).softmax(dim=1)
        return readout((weights[..., None] * x).sum(dim=1))

    x, mask = padded(train_tokens)
    y = torch.tensor([classes.index(c) for c in train_y])
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(logits(x, mask), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        pred = logits(*padded(test_tokens)).argmax(dim=1)
    return [classes[p] == c for p, c in zip(pred.tolist(), test_y, strict=True)]


def fresh_tasks(family: str) -> list[tuple[str, tuple]]:
    """(text, task key) for every filling of the family's fresh templates."""
    from vla_sim.tasks import COLOURS, FAMILIES, TaskFamily

    slots = FAMILIES[TaskFamily(family)].slots
    return [
        (text, (family, tuple(sorted(filled.items()))))
        for text, filled in filled_templates(FRESH_TEMPLATES.get(family, ()), slots, tuple(COLOURS))
    ]


def scenario(embed, tokens, families: Sequence[str]) -> dict[str, dict[str, float]]:
    from vla_policy.node_core import InstructionGrounding
    from vla_sim.tasks import COLOURS, FAMILIES, TaskFamily, parse_instruction

    specs = [FAMILIES[TaskFamily(f)] for f in families]
    train = sorted({t for s in specs for t in fillings(s.train_templates, s.slots, tuple(COLOURS))})
    held = sorted({t for s in specs for t in fillings(s.heldout_templates, s.slots, tuple(COLOURS))})
    train_tasks, held_tasks = [parse_instruction(t) for t in train], [parse_instruction(t) for t in held]
    train_x, held_x = embed(train), embed(held)
    _, singular, basis = torch.linalg.svd(train_x, full_matrices=False)
    basis = basis[: int((singular > singular[0] * 1e-4).sum())]
    project = lambda x: torch.nn.functional.normalize(x @ basis.T @ basis, dim=-1)  # noqa: E731
    raw_cos = (held_x @ train_x.T).max(dim=1).values
    proj_sim = project(held_x) @ project(train_x).T
    nearest = proj_sim.argmax(dim=1).tolist()

    def key(task) -> tuple:
        return task.family.value, tuple(sorted(task.slots.items()))

    same_task = [key(held_tasks[i]) == key(train_tasks[j]) for i, j in enumerate(nearest)]
    grounding = InstructionGrounding(train, tokens)
    task_of = dict(zip(train, (key(t) for t in train_tasks), strict=True))
    aligned = [task_of[grounding(text)] == key(task) for text, task in zip(held, held_tasks, strict=True)]
    family_ok = ridge_accuracy(
        train_x, [t.family.value for t in train_tasks], held_x, [t.family.value for t in held_tasks]
    )
    colour_ok = ridge_accuracy(
        train_x, [t.slots["block"] for t in train_tasks], held_x, [t.slots["block"] for t in held_tasks]
    )

    def token_rows(texts: Sequence[str]) -> list[torch.Tensor]:
        return [torch.as_tensor(tokens(t), dtype=torch.float32) for t in texts]

    out = {}
    for family in families:
        idx = [i for i, t in enumerate(held_tasks) if t.family.value == family]

        def mean(values: Sequence[bool], idx: list[int] = idx) -> float:
            return float(sum(values[i] for i in idx) / len(idx))

        out[family] = {
            "heldout": len(idx),
            "cos_raw": float(raw_cos[idx].mean()),
            "cos_proj": float(proj_sim.max(dim=1).values[idx].mean()),
            "nn_task": mean(same_task),
            "lin_family": mean(family_ok),
            "lin_colour": mean(colour_ok),
            "aligned": mean(aligned),
        }
        slot = GOAL_SLOTS.get(family)
        if slot is not None:
            # Fitted per family: a goal slot's values differ in kind (a colour, a target, a direction).
            fit = [i for i, t in enumerate(train_tasks) if t.family.value == family]
            fit_y = [train_tasks[i].slots[slot] for i in fit]
            held_y = [held_tasks[i].slots[slot] for i in idx]
            lin = ridge_accuracy(train_x[fit], fit_y, held_x[idx], held_y)
            tok = token_attention_accuracy(
                token_rows([train[i] for i in fit]), fit_y, token_rows([held[i] for i in idx]), held_y
            )
            out[family]["lin_goal"], out[family]["tok_goal"] = sum(lin) / len(idx), sum(tok) / len(idx)
        fresh = fresh_tasks(family)
        if fresh:
            out[family]["fresh"] = sum(task_of[grounding(t)] == k for t, k in fresh) / len(fresh)
    out["_train_instructions"] = {"n": len(train), "span_rank": len(basis)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--families", nargs="+", default=["pick", "push", "place", "stack"])
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from vla_policy.models.config import ModelConfig
    from vla_policy.models.encoders import InstructionEncoder

    encoder = InstructionEncoder(
        ModelConfig(kind="native_vla", camera_names=("front",), state_dim=8, action_dim=8)
    )
    t0 = time.perf_counter()
    embed = lambda t: encoder(list(t))  # noqa: E731
    results = {f"{f} alone": scenario(embed, encoder.tokens, [f]) for f in a.families}
    results["together"] = scenario(embed, encoder.tokens, a.families)
    print(f"all-MiniLM-L6-v2, {encoder.cache_size} sentences, {time.perf_counter() - t0:.1f} s\n")
    print(f"{'scenario':<16}{'family':<8}{'held-out':>9}{'cos raw':>9}{'cos proj':>9}{'nn task':>9}"
          f"{'lin family':>11}{'lin colour':>11}{'aligned':>9}{'fresh':>7}{'lin goal':>9}{'tok goal':>9}")  # fmt: skip
    for name, table in results.items():
        span = table["_train_instructions"]
        for family in a.families:
            if family not in table:
                continue
            r = table[family]
            print(f"{name:<16}{family:<8}{r['heldout']:>9}{r['cos_raw']:>9.3f}{r['cos_proj']:>9.3f}"
                  f"{r['nn_task']:>9.0%}{r['lin_family']:>11.0%}{r['lin_colour']:>11.0%}{r['aligned']:>9.0%}"
                  + (f"{r['fresh']:>7.0%}" if "fresh" in r else f"{'':>7}")
                  + (f"{r['lin_goal']:>9.0%}{r['tok_goal']:>9.0%}" if "lin_goal" in r else ""))  # fmt: skip
        print(f"{'':<16}({span['n']} training instructions, span rank {span['span_rank']})")
    print(json.dumps({"bench": "instruction_grounding", "encoder": "all-MiniLM-L6-v2", "results": results}))


if __name__ == "__main__":
    main()
