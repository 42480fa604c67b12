"""A worker takes first the queued network whose layer shapes it has built (scaling.storage.prefer_queued,
Objective.queued_rank): networks that differ only in depth share their cuDNN plans."""

from __future__ import annotations

import optuna
import pytest

from scaling.bases import MobileNetV2Spec
from scaling.objective import Objective, shape_key
from scaling.search import MEMBER, study_members
from scaling.spec import custom_spec
from scaling.storage import prefer_queued
from scaling.study import StudyConfig


def test_shape_key_ignores_depth_only():
    assert shape_key(custom_spec(0.5, 1.0, 32)) == shape_key(custom_spec(0.5, 2.0, 32))
    assert shape_key(custom_spec(0.5, 1.0, 32)) != shape_key(custom_spec(0.6, 1.0, 32))
    assert shape_key(custom_spec(0.5, 1.0, 32)) != shape_key(custom_spec(0.5, 1.0, 40))
    m = MobileNetV2Spec(width=1.0, depth=1.0, resolution=56, num_classes=10)
    assert shape_key(m) == shape_key(m.replace(depth=1.6)) != shape_key(m.replace(width=1.4))


@pytest.fixture
def queue(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'q.db'}", study_name="q")
    for k in range(4):
        study.enqueue_trial({MEMBER: k, "seed": 0})
    return study


def _taken(study) -> int:
    trial = study.ask()
    return study._storage.get_trial_system_attrs(trial._trial_id)["fixed_params"][MEMBER]


def test_the_lowest_rank_is_taken_first_then_queue_order(queue):
    prefer_queued(queue, lambda fixed: 0 if fixed[MEMBER] in (2, 3) else 1)
    assert [_taken(queue) for _ in range(4)] == [2, 3, 0, 1]
    assert queue._pop_waiting_trial_id() is None  # nothing left queued


def test_a_trial_another_worker_took_is_passed_over(queue, tmp_path):
    other = optuna.load_study(study_name="q", storage=f"sqlite:///{tmp_path / 'q.db'}")
    prefer_queued(queue, lambda fixed: 0 if fixed[MEMBER] == 1 else 1)
    assert _taken(other) == 0  # the other worker, in plain queue order
    assert _taken(queue) == 1
    assert _taken(other) == 2
    assert _taken(queue) == 3


def test_a_worker_ranks_first_what_shares_a_network_it_trained():
    config = StudyConfig(name="aff", base_resolution=32, phi=1, train_size=100, val_size=50)
    members = study_members(config, 10)
    by_shape = {}
    for m in members:
        by_shape.setdefault(shape_key(m.spec), []).append(m)
    twins = next(g for g in by_shape.values() if len(g) >= 2)  # the grid has networks that differ only in depth
    assert len({m.spec.depth for m in twins}) == len(twins)
    objective = Objective(config, device="cpu", num_classes=10)
    ranks = lambda: [objective.queued_rank({MEMBER: m.key, "seed": 0}) for m in members]  # noqa: E731
    assert ranks() == [1] * len(members)
    objective.built.add(shape_key(twins[0].spec))
    assert [m.key for m, r in zip(members, ranks()) if r == 0] == [m.key for m in members if m in twins]
    assert objective.queued_rank({MEMBER: 10_000, "seed": 0}) == 1  # not a member of this grid: queue order
