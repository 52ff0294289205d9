"""Registries carry their own facts (objectives, selection policies, tasks): the help lists
their names, the cards read their descriptions, and an incomplete or unknown entry is an
error at registration or parse time, never after training or decoding."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from r2sft.collect import CollectConfig
from r2sft.collect.card import render_card
from r2sft.collect.selection import (
    POLICIES,
    SelectionPolicy,
    register_policy,
    select_per_prompt,
    summarize,
)
from r2sft.tasks import Task, TaskArgs, available_tasks, register_task, task_class
from r2sft.training.config import TrainConfig
from r2sft.training.export import model_card
from r2sft.training.registry import OBJECTIVES, Objective, register_objective


def _help(cls: type, name: str) -> str:
    return next(f for f in dataclasses.fields(cls) if f.name == name).metadata["help"]


# ----------------------------------------------------------------------------- objectives


def test_every_objective_brings_its_options_help_and_card_line() -> None:
    config_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for name, objective in OBJECTIVES.items():
        options = {f.name for f in dataclasses.fields(objective.options)}
        assert options and options <= config_fields, name  # its flags exist on train.py
        assert f"{name} ({objective.summary})" in _help(TrainConfig, "objective")
        config = TrainConfig(model="base/model", objective=name, train_block_length=32)
        line = objective.describe(config)
        assert line and line in model_card(config, {"num_trajectories": 1}, [])


def test_incomplete_or_clashing_objectives_fail_when_they_register() -> None:
    llada = OBJECTIVES["llada"]
    with pytest.raises(ValueError, match="needs a name and a summary"):
        Objective("fast", "", llada.step, llada.options, llada.describe)

    @dataclass
    class NoDefault:
        fast_rate: float

    with pytest.raises(ValueError, match=r"defaults for its options \['fast_rate'\]"):
        Objective("fast", "faster", llada.step, NoDefault, llada.describe)
    with pytest.raises(ValueError, match="registered twice"):
        register_objective(llada)

    @dataclass
    class Clashing:
        llada_eps: float = 0.1

    with pytest.raises(ValueError, match=r"\['llada_eps'\] that objective 'llada' declares"):
        register_objective(Objective("fast", "faster", llada.step, Clashing, llada.describe))
    assert "fast" not in OBJECTIVES
    with pytest.raises(ValueError, match="--objective 'fast' is unknown; choose one of llada"):
        TrainConfig(model="base/model", objective="fast")


# ----------------------------------------------------------------------------- selection


def test_every_policy_is_in_the_help_and_names_itself_in_the_card() -> None:
    rows = [
        {"prompt_id": "p", "seed": 1, "correct": True, "r_total": 2.0, "nfe": 4, "r_s": 1.0,
         "r_t": 1.0, "r_total_per_token": 0.5},
    ]  # fmt: skip
    config = CollectConfig()
    for name, policy in POLICIES.items():
        assert f"{name}: {policy.description}" in _help(CollectConfig, "selection")
        summary = {**summarize(rows, select_per_prompt(rows, name)), "selection": name}
        assert f"one correct candidate: {policy.description}" in render_card(config, summary)
    with pytest.raises(ValueError, match="selection 'fastest' is unknown"):
        CollectConfig(selection="fastest")


def test_incomplete_policies_fail_when_they_register() -> None:
    with pytest.raises(ValueError, match="needs a name, a key and a description"):
        SelectionPolicy("fastest", lambda record: (record["nfe"],), "")
    with pytest.raises(ValueError, match="registered twice"):
        register_policy(POLICIES["nfe"])


# ----------------------------------------------------------------------------- tasks


def test_every_task_is_in_the_help_and_an_unknown_one_fails_at_parse_time() -> None:
    built_in = [n for n in available_tasks() if task_class(n).__module__.startswith("r2sft.")]
    assert {"arith", "gsm8k", "math", "humaneval", "mbpp"} <= set(built_in)
    for name in built_in:  # (tests may register tasks of their own, after the help is made)
        assert f"{name}: {task_class(name).description}" in _help(TaskArgs, "task")
    with pytest.raises(ValueError, match="unknown task 'gsm9k'; available tasks: arith"):
        TaskArgs(task="gsm9k")


def test_incomplete_tasks_fail_when_they_register() -> None:
    class Undescribed(Task):
        def load(self, split, limit=None):
            return []

        def user_message(self, example):
            return example.question

        def is_correct(self, example, response):
            return False

    with pytest.raises(ValueError, match="needs a description"):
        register_task("undescribed")(Undescribed)

    class Unfinished(Task):
        description = "no scorer"

        def load(self, split, limit=None):
            return []

    with pytest.raises(TypeError, match=r"does not implement \['is_correct', 'user_message'\]"):
        register_task("unfinished")(Unfinished)
    with pytest.raises(TypeError, match="not a subclass of r2sft.tasks.Task"):
        register_task("plain")(object)
    assert not {"undescribed", "unfinished", "plain"} & set(available_tasks())
