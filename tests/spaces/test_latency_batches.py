"""``budget.latency.batch`` with several batches: validation, objective/constraint names ``latency@B``."""

from __future__ import annotations

import pytest
import yaml

from spaces.space import SpaceError, load_space, parse_constraint, space_from_dict


def space_dict(batch=(1, 8), objectives=("accuracy", "latency"), constraints=()) -> dict:
    return {
        "name": "t", "model": {"name": "resnet20", "num_classes": 10, "input_size": 32},
        "data": {"dataset": "digits"}, "prune": {"granularity": "block", "ratio": {"low": 0.0, "high": 0.5}},
        "objectives": list(objectives), "constraints": list(constraints),
        "budget": {"latency": {"batch": list(batch) if isinstance(batch, tuple) else batch}},
    }


def test_several_batches_give_per_batch_objectives_and_constraints():
    space = space_from_dict(space_dict(objectives=("accuracy", "flops", "latency", "latency@8"),
                                       constraints=("latency_ratio <= 0.9", "latency@8 <= 0.7")))
    lat = space.budget.latency
    assert lat.batch == (1, 8) and lat.batches == (1, 8) and lat.other_batches == (8,)
    assert space.directions == ["maximize", "minimize", "minimize", "minimize"] and space.needs_latency
    assert [c.metric for c in space.parsed_constraints] == ["latency_ratio", "latency@8"]
    assert space.to_dict()["budget"]["latency"]["batch"] == [1, 8]
    assert space_from_dict(space.to_dict()) == space


def test_per_batch_name_alone_needs_latency():
    assert space_from_dict(space_dict(objectives=("accuracy", "latency@8"))).needs_latency
    assert space_from_dict(space_dict(objectives=("accuracy",), constraints=("latency@8 <= 0.5",))).needs_latency
    assert not space_from_dict(space_dict(objectives=("accuracy", "flops"))).needs_latency


def test_single_batch_stays_an_integer():
    """Old spaces and run configs (``batch: 1``) load and write back unchanged."""
    space = space_from_dict(space_dict(batch=4))
    assert space.budget.latency.batch == 4 and space.budget.latency.batches == (4,)
    assert space.budget.latency.other_batches == () and space.to_dict()["budget"]["latency"]["batch"] == 4
    assert load_space("resnet20-cifar10", ["budget.latency.batch=[1,128]"]).budget.latency.batches == (1, 128)


@pytest.mark.parametrize("batch,allowed", [
    ((1, 1), "distinct integers >= 1"),
    ((), "distinct integers >= 1"),
    ((0, 8), "distinct integers >= 1"),
    (0, "must be >= 1"),
    ("many", "expected an integer or a list"),
    ((1, 2.5), "expected an integer or a list"),
])
def test_bad_batches_are_one_line_errors(tmp_path, batch, allowed):
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(space_dict(batch=batch)))
    with pytest.raises(SpaceError) as exc:
        load_space(p)
    text = str(exc.value)
    assert len(text.splitlines()) == 1 and str(p) in text and "budget.latency.batch" in text and allowed in text


@pytest.mark.parametrize("objectives,constraints,field", [
    (("accuracy", "latency@128"), (), "objectives[1]"),
    (("accuracy", "latency"), ("latency@128 <= 0.3",), "constraints[0]"),
    (("accuracy", "latency@1"), (), "objectives[1]"),  # the primary batch is named latency
])
def test_unmeasured_batch_is_refused_naming_the_allowed_names(objectives, constraints, field):
    with pytest.raises(SpaceError) as exc:
        space_from_dict(space_dict(objectives=objectives, constraints=constraints))
    text = str(exc.value)
    assert field in text and "latency@8" in text and "latency, latency_ratio" in text, text
    with pytest.raises(SpaceError, match="latency@8"):
        space_from_dict(space_dict(batch=1, objectives=("accuracy", "latency@8")))


def test_constraint_syntax_accepts_batch_names():
    c = parse_constraint("latency@128 <= 0.3")
    assert (c.metric, c.op, c.bound) == ("latency@128", "<=", 0.3)
    assert c.violation({"latency@128": 0.25}) == pytest.approx(-0.05) and c.violation({"latency": 0.1}) > 1e9
    with pytest.raises(ValueError, match="unknown metric 'accuracy@128'"):
        parse_constraint("accuracy@128 >= 90")
