"""Distillation: KD loss value, CE blending, feature adapters, frozen teacher."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compress.distill import DistillLoss, build_teacher, kd_loss
from compress.models import get_model
from spaces.policy import DistillSpec, PolicyError


def _kl_by_hand(s: torch.Tensor, t: torch.Tensor, T: float) -> float:
    total = 0.0
    for i in range(s.shape[0]):
        zs = [math.exp(v / T) for v in s[i].tolist()]
        zt = [math.exp(v / T) for v in t[i].tolist()]
        ps = [v / sum(zs) for v in zs]
        pt = [v / sum(zt) for v in zt]
        total += sum(p * (math.log(p) - math.log(q)) for p, q in zip(pt, ps))
    return total / s.shape[0] * T * T


@pytest.mark.parametrize("T", [1.0, 4.0])
def test_kd_loss_matches_hand_computed(T):
    s, t = torch.randn(5, 7), torch.randn(5, 7) * 3
    assert kd_loss(s, t, T).item() == pytest.approx(_kl_by_hand(s, t, T), rel=1e-5)
    assert kd_loss(t, t, T).item() == pytest.approx(0.0, abs=1e-6)


def _tiny(width: int, classes: int = 4) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, classes))


def test_alpha_zero_is_cross_entropy_with_label_smoothing():
    teacher, student = _tiny(8), _tiny(8)
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 4, (6,))
    loss = DistillLoss(teacher, student, DistillSpec(alpha=0.0), label_smoothing=0.1)
    out = student(x)
    assert loss.replaces_ce
    assert loss(x, out, y).item() == pytest.approx(F.cross_entropy(out, y, label_smoothing=0.1).item(), rel=1e-6)


def test_blend_is_weighted_ce_plus_kd():
    teacher, student = _tiny(8), _tiny(8)
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 4, (6,))
    spec = DistillSpec(alpha=0.7, temperature=3.0)
    out = student(x)
    with torch.no_grad():
        t = teacher.eval()(x)
    expected = 0.3 * F.cross_entropy(out, y).item() + 0.7 * _kl_by_hand(out.detach(), t, 3.0)
    assert DistillLoss(teacher, student, spec)(x, out, y).item() == pytest.approx(float(expected), rel=1e-5)


def test_feature_adapter_bridges_pruned_width_and_trains():
    teacher, student = _tiny(8), _tiny(4)  # "pruned" student: 4 of 8 channels
    spec = DistillSpec(alpha=0.0, feature_weight=1.0, feature_layers=("1",))
    loss = DistillLoss(teacher, student, spec, input_size=8)
    adapters = list(loss.adapters.values())
    assert isinstance(adapters[0], nn.Conv2d)
    assert (adapters[0].in_channels, adapters[0].out_channels) == (4, 8)
    params = list(loss.parameters())
    assert len(params) == 1 and params[0].requires_grad
    opt = torch.optim.SGD(list(student.parameters()) + params, lr=0.05)
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,))
    first = None
    for _ in range(30):
        opt.zero_grad()
        total = loss(x, student(x), y)
        total.backward()
        assert params[0].grad is not None and params[0].grad.abs().sum() > 0
        opt.step()
        first = loss.last["feature"] if first is None else first
    assert loss.last["feature"] < 0.7 * first
    loss.close()
    # hooks removed: forwards no longer capture
    student(x)
    assert loss._s_cap.outputs == {}


def test_same_width_features_use_identity():
    teacher, student = _tiny(8), _tiny(8)
    spec = DistillSpec(alpha=0.5, feature_weight=0.5, feature_layers=("2",))
    with DistillLoss(teacher, student, spec, input_size=8) as loss:
        assert isinstance(loss.adapters["f0"], nn.Identity) and list(loss.parameters()) == []


def test_teacher_gets_no_grads_and_stays_eval():
    teacher, student = _tiny(8), _tiny(4)
    bn_before = teacher[1].running_mean.clone()
    spec = DistillSpec(alpha=0.9, feature_weight=1.0, feature_layers=("0",))
    loss = DistillLoss(teacher, student, spec, input_size=8)
    teacher.train()  # a careless loop calling .train() on everything must not matter
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 4, (8,))
    loss(x, student(x), y).backward()
    assert not teacher.training
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert torch.equal(teacher[1].running_mean, bn_before)
    assert any(p.grad is not None for p in student.parameters())


def test_unknown_feature_layer_is_a_policy_error():
    with pytest.raises(PolicyError, match="layer9"):
        DistillLoss(_tiny(8), _tiny(8), DistillSpec(feature_weight=1.0, feature_layers=("layer9",)), input_size=8)


def test_teacher_must_not_be_student():
    m = _tiny(8)
    with pytest.raises(ValueError, match="different"):
        DistillLoss(m, m, DistillSpec(alpha=0.5))


def test_build_teacher_self_is_frozen_copy():
    original = get_model("resnet20")
    teacher = build_teacher(DistillSpec(alpha=0.5), original, 10)
    assert teacher is not original and not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in original.parameters())
    assert torch.equal(teacher.conv1.weight, original.conv1.weight)


def test_build_teacher_from_registry_checkpoint(tmp_path):
    ref = get_model("resnet32")
    ckpt = tmp_path / "t.pt"
    torch.save(ref.state_dict(), ckpt)
    teacher = build_teacher(DistillSpec(teacher="resnet32", teacher_checkpoint=str(ckpt), alpha=0.5),
                            get_model("resnet20"), 10)
    assert torch.equal(teacher.linear.weight, ref.linear.weight)


@pytest.mark.parametrize("spec, match", [
    (DistillSpec(teacher="resnet32", alpha=0.5), "teacher_checkpoint"),
    (DistillSpec(teacher="vgg16", teacher_checkpoint="x.pt", alpha=0.5), "resnet56"),
    (DistillSpec(teacher="resnet32", teacher_checkpoint="/nonexistent.pt", alpha=0.5), "no such file"),
    (DistillSpec(teacher="self", teacher_checkpoint="x.pt", alpha=0.5), "teacher_checkpoint"),
])
def test_build_teacher_errors(spec, match):
    with pytest.raises(PolicyError, match=match):
        build_teacher(spec, get_model("resnet20"), 10)


def test_resnet_feature_distillation_on_stage_outputs():
    teacher, student = get_model("resnet20"), get_model("resnet20")
    spec = DistillSpec(alpha=0.5, feature_weight=1.0, feature_layers=("layer1", "layer2.0", "layer3"))
    with DistillLoss(teacher, student, spec, input_size=32) as loss:
        x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
        total = loss(x, student(x), y)
        assert torch.isfinite(total) and set(loss.last) == {"ce", "kd", "feature"}
