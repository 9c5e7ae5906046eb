"""The task definition: sampling, templates and splits, parsing, and every family's success predicate."""

from __future__ import annotations

import numpy as np
import pytest
from vla_sim.tasks import (
    BLOCK_SIZE,
    FAMILIES,
    PUSH_DISTANCE,
    REFERENT_NAMES,
    BlockState,
    Referent,
    Split,
    TargetState,
    Task,
    TaskFamily,
    WorldState,
    is_success,
    make_task,
    parse_instruction,
    referent_positions,
    sample_task,
)

REST = BLOCK_SIZE / 2


def world(blocks: dict[str, tuple[float, float, float]], held=(), initial=None) -> WorldState:
    initial = initial or {}
    return WorldState(
        blocks={c: BlockState(p, initial.get(c, p)) for c, p in blocks.items()},
        targets={
            "bowl": TargetState((0.5, 0.2, 0.005), 0.07, 0.03),
            "zone": TargetState((0.5, -0.2, 0.0), 0.06, 0.0),
        },
        table_height=0.0,
        held=frozenset(held),
    )


def test_splits_are_disjoint_and_sampling_is_seeded():
    for spec in FAMILIES.values():
        assert not set(spec.train_templates) & set(spec.heldout_templates)
    for family in TaskFamily:
        a = sample_task(family, np.random.default_rng(7))
        b = sample_task(family, np.random.default_rng(7))
        assert a == b
        held = sample_task(family, np.random.default_rng(7), split="heldout")
        assert held.split is Split.HELDOUT
        assert any(held.instruction == t.format(**held.slots) for t in FAMILIES[family].heldout_templates)


@pytest.mark.parametrize("family", list(TaskFamily))
def test_every_template_parses_back_to_its_task(family):
    rng = np.random.default_rng(3)
    for split in Split:
        for index in range(len(FAMILIES[family].templates(split))):
            task = sample_task(family, rng, split)
            worded = make_task(family, split, index, **task.slots)
            parsed = parse_instruction(worded.instruction.upper() + ".")
            assert parsed.family is family
            assert dict(parsed.slots) == dict(task.slots)
            assert parsed.split is split


def test_bad_tasks_and_instructions_are_rejected():
    with pytest.raises(ValueError, match="no task template"):
        parse_instruction("make me a sandwich")
    with pytest.raises(ValueError, match="unknown colour"):
        make_task("pick", block="magenta")
    with pytest.raises(ValueError, match="distinct"):
        make_task("stack", block="red", base="red")
    with pytest.raises(ValueError, match="needs slots"):
        Task(TaskFamily.PUSH, {"block": "red"}, "push the red block")
    # The two-step template repeats a colour: a mismatch must not parse.
    with pytest.raises(ValueError):
        parse_instruction("stack the red block on the blue one, then the green block on the yellow one")


def test_pick_predicate():
    task = make_task("pick", block="red")
    lifted = (0.5, 0.0, REST + 0.1)
    assert is_success(task, world({"red": lifted, "blue": (0.4, 0.1, REST)}, held={"red"}))
    assert not is_success(task, world({"red": lifted, "blue": (0.4, 0.1, REST)}))  # not in the gripper
    assert not is_success(
        task, world({"red": (0.5, 0.0, REST + 0.02), "blue": (0.4, 0.1, REST)}, held={"red"})
    )


def test_stack_predicate():
    task = make_task("stack", block="red", base="blue")
    assert is_success(task, world({"red": (0.5, 0.0, REST + BLOCK_SIZE), "blue": (0.5, 0.005, REST)}))
    assert not is_success(
        task, world({"red": (0.5, 0.0, REST + BLOCK_SIZE), "blue": (0.5, 0.0, REST)}, held={"red"})
    )
    assert not is_success(task, world({"red": (0.5, 0.05, REST), "blue": (0.5, 0.0, REST)}))  # beside it
    assert not is_success(
        task, world({"blue": (0.5, 0.0, REST + BLOCK_SIZE), "red": (0.5, 0.0, REST)})
    )  # swapped


def test_push_predicate():
    task = make_task("push", block="red", direction="left")
    start = {"red": (0.5, 0.0, REST)}
    assert is_success(task, world({"red": (0.5, 0.12, REST)}, initial=start))
    assert not is_success(task, world({"red": (0.5, -0.12, REST)}, initial=start))  # wrong way
    assert not is_success(task, world({"red": (0.5, 0.05, REST)}, initial=start))  # not far enough
    assert not is_success(
        task, world({"red": (0.5, 0.12, REST + 0.05)}, held={"red"}, initial=start)
    )  # lifted


def test_place_predicate():
    bowl = make_task("place", block="red", target="bowl")
    zone = make_task("place", block="red", target="zone")
    in_bowl = (0.52, 0.21, 0.005 + REST)
    in_zone = (0.53, -0.22, REST)
    assert is_success(bowl, world({"red": in_bowl}))
    assert not is_success(bowl, world({"red": in_bowl}, held={"red"}))
    assert not is_success(bowl, world({"red": in_zone}))
    assert is_success(zone, world({"red": in_zone}))
    assert not is_success(zone, world({"red": (0.58, -0.2, REST)}))  # outside the square


def test_stack_two_predicate():
    task = make_task("stack_two", block="red", base="blue", top="green")
    tower = {
        "blue": (0.5, 0.0, REST),
        "red": (0.5, 0.0, REST + BLOCK_SIZE),
        "green": (0.5, 0.0, REST + 2 * BLOCK_SIZE),
    }
    assert is_success(task, world(tower))
    assert not is_success(task, world(tower, held={"green"}))
    half = {**tower, "green": (0.4, 0.1, REST)}
    assert not is_success(task, world(half))


def test_missing_block_is_an_error():
    with pytest.raises(ValueError, match="no \\['red'\\] block"):
        is_success(make_task("pick", block="red"), world({"blue": (0.5, 0.0, REST)}))


def test_referent_positions_per_family():
    blocks = {"red": (0.5, 0.1, REST + 0.03), "blue": (0.4, -0.1, REST), "green": (0.6, 0.0, REST)}
    initial = {"red": (0.45, 0.12, REST)}
    w = world(blocks, initial=initial)
    red, blue, bowl, zone = blocks["red"], blocks["blue"], (0.5, 0.2, 0.005), (0.5, -0.2, 0.0)
    cases = [
        (make_task("pick", block="red"), (*red, *red)),
        (make_task("stack", block="red", base="blue"), (*red, *blue)),
        (make_task("place", block="red", target="bowl"), (*red, *bowl)),
        (make_task("place", block="red", target="zone"), (*red, *zone)),
        (make_task("push", block="red", direction="left"), (*red, 0.45, 0.12 + PUSH_DISTANCE, REST)),
        (make_task("push", block="red", direction="back"), (*red, 0.45 - PUSH_DISTANCE, 0.12, REST)),
        (make_task("stack_two", block="red", base="blue", top="green"), (*red, *blue)),  # the first step
    ]
    assert len(REFERENT_NAMES) == 6
    for task, expected in cases:
        state = referent_positions(task, w)
        assert state.dtype == np.float32 and state.shape == (6,), task.family
        np.testing.assert_allclose(state, expected, atol=1e-6, err_msg=task.instruction)


def test_referents_name_an_object_or_a_point():
    assert Referent(object="red").to_dict() == {"object": "red"}
    assert Referent(point=(1.0, 2.0, 3.0)).to_dict() == {"point": [1.0, 2.0, 3.0]}
    with pytest.raises(ValueError, match="either"):
        Referent()
    with pytest.raises(ValueError, match="either"):
        Referent(object="red", point=(0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="no object"):
        Referent(object="red").position(world({"blue": (0.5, 0.0, REST)}))
