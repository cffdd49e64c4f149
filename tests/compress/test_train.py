"""compress.train: fit, schedules, divergence, extra losses, BN recalibration, checkpoints."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from compress.models import get_model, load_checkpoint
from compress.train import DivergenceError, TrainingError, bn_recalibrate, fit, lr_factor, param_groups, save_checkpoint
from spaces.policy import FinetuneSpec


def tiny_cnn(num_classes: int = 10, bn: bool = True) -> nn.Module:
    """A small conv net: the loop's behaviour, at a fraction of ResNet-20's cost."""
    torch.manual_seed(0)
    norm = (lambda c: nn.BatchNorm2d(c)) if bn else (lambda c: nn.Identity())
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=not bn), norm(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=not bn), norm(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(16 * 16, num_classes))


pytestmark = pytest.mark.usefixtures("one_thread")


def _loss_on(model: nn.Module, batch) -> float:
    model.eval()
    with torch.no_grad():
        x, y = batch
        return float(nn.functional.cross_entropy(model(x), y))


def test_fit_reduces_loss_on_digits(digits):
    model = tiny_cnn()
    batch = next(iter(digits.loader("val", 256)))
    before = _loss_on(model, batch)
    res = fit(model, digits.loader("train", 64), FinetuneSpec(steps=40, lr=0.1, batch_size=64), progress=False)
    after = _loss_on(model, batch)
    assert res.steps == 40 and after < 0.5 * before, (before, after)
    assert res.final_loss < res.initial_loss
    assert res.images_per_s > 0 and res.seconds > 0
    assert not model.training
    assert math.isclose(res.epochs, 40 / len(digits.loader("train", 64)))


def test_fit_is_deterministic_given_seed(digits):
    def run(seed):
        torch.manual_seed(123 + seed)  # global state must not matter: fit seeds itself
        model = tiny_cnn()
        model.load_state_dict(base)
        fit(model, digits.loader("train", 32, seed=99), FinetuneSpec(steps=6, lr=0.05, batch_size=32, seed=seed),
            progress=False)
        return model.state_dict()

    base = tiny_cnn().state_dict()
    a, b, c = run(0), run(0), run(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_fractional_epochs_and_steps_win(digits):
    loader = digits.loader("train", 64)
    model = tiny_cnn()
    res = fit(model, loader, FinetuneSpec(epochs=0.1, lr=0.01), progress=False)
    assert res.steps == math.ceil(0.1 * len(loader))
    res = fit(model, loader, FinetuneSpec(epochs=5.0, steps=3, lr=0.01), progress=False)
    assert res.steps == 3


def test_fit_runs_past_one_epoch(digits):
    loader = digits.loader("train", 256, limit=512)  # 2 batches per epoch
    res = fit(tiny_cnn(), loader, FinetuneSpec(steps=5, lr=0.01), progress=False)
    assert res.steps == 5 and math.isclose(res.epochs, 2.5)


def test_nan_extra_loss_raises_divergence(digits):
    def nan_loss(inputs, outputs, targets):
        return outputs.sum() * float("nan")

    with pytest.raises(DivergenceError) as exc:
        fit(tiny_cnn(), digits.loader("train", 32), FinetuneSpec(steps=5), extra_loss=nan_loss,
            progress=False)
    assert exc.value.step == 0 and math.isnan(exc.value.loss)
    assert isinstance(exc.value, TrainingError) and "step 0" in str(exc.value)


def test_huge_lr_diverges(digits):
    model = tiny_cnn(bn=False)  # without BN nothing stops the activations from overflowing
    with pytest.raises(DivergenceError) as exc:
        fit(model, digits.loader("train", 32), FinetuneSpec(steps=30, lr=1e6), progress=False)
    assert exc.value.step > 0 and not math.isfinite(exc.value.loss)


def test_extra_loss_added_and_replacing(digits):
    seen = []

    def additive(inputs, outputs, targets):
        seen.append(inputs.shape[0])
        return torch.tensor(100.0)

    res = fit(tiny_cnn(), digits.loader("train", 32), FinetuneSpec(steps=3, lr=0.01),
              extra_loss=additive, progress=False)
    assert seen == [32, 32, 32] and res.final_loss > 100.0  # CE + 100

    class Replacing:
        replaces_ce = True

        def __init__(self):
            self.scale = nn.Parameter(torch.tensor(1.0))
            self.calls = 0

        def parameters(self):
            return iter([self.scale])

        def __call__(self, inputs, outputs, targets):
            self.calls += 1
            return (outputs.pow(2).mean() - 5.0) ** 2 * 0 + self.scale ** 2  # CE is not included

    rep = Replacing()
    res = fit(tiny_cnn(), digits.loader("train", 32), FinetuneSpec(steps=4, lr=0.1, momentum=0.0),
              extra_loss=rep, progress=False)
    assert rep.calls == 4
    assert res.initial_loss < 1.01  # only scale**2, no CE (~2.3)
    assert float(rep.scale.detach()) < 1.0, "extra_loss.parameters() must be optimized"


def test_no_weight_decay_on_bn_and_bias():
    model = get_model("resnet20")
    groups = param_groups(model, [], 5e-4)
    decay = {id(p) for p in groups[0]["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in decay) == (p.ndim > 1), name
    assert groups[1]["weight_decay"] == 0.0


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("schedule", ["cosine", "onecycle", "constant"])
def test_optimizers_and_schedules_train(digits, optimizer, schedule):
    lr = 0.05 if optimizer == "sgd" else 2e-3
    lrs = []
    fit(tiny_cnn(), digits.loader("train", 32),
        FinetuneSpec(steps=4, lr=lr, optimizer=optimizer, schedule=schedule, warmup_steps=1,
                     label_smoothing=0.1, grad_clip=1.0), progress=False,
        on_step=lambda step, loss, cur: lrs.append(cur))
    expected = [lr * lr_factor(schedule, s, 4, 1) for s in range(4)]
    assert lrs == pytest.approx(expected)


def test_schedule_values():
    # warm-up is linear, then cosine reaches ~0 at the end
    assert [lr_factor("cosine", s, 10, 4) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lr_factor("cosine", 4, 10, 4) == pytest.approx(1.0)
    assert lr_factor("cosine", 7, 10, 4) == pytest.approx(0.5 * (1 + math.cos(math.pi * 3 / 6)))
    assert lr_factor("cosine", 0, 100) == 1.0 and lr_factor("cosine", 99, 100) < 0.001
    assert lr_factor("constant", 50, 100, 10) == 1.0
    one = [lr_factor("onecycle", s, 100) for s in range(100)]
    assert one[0] == pytest.approx(1 / 25 + (1 - 1 / 25) / 30)
    assert one[29] == pytest.approx(1.0) and one[30] == pytest.approx(1.0) and max(one) == pytest.approx(1.0)
    assert all(a < b for a, b in zip(one[:29], one[1:30])) and all(a >= b for a, b in zip(one[30:], one[31:]))
    assert one[-1] < 0.01
    with pytest.raises(ValueError, match="allowed"):
        lr_factor("step", 0, 10)


def test_on_step_can_stop_early(digits):
    res = fit(tiny_cnn(), digits.loader("train", 32), FinetuneSpec(steps=50), progress=False,
              on_step=lambda step, loss, lr: step >= 3)
    assert res.steps == 3 and res.stopped_early


def test_bn_recalibrate_reestimates_statistics(digits):
    model = get_model("resnet20")
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.fill_(5.0)
            m.running_var.fill_(100.0)
    batches = list(digits.loader("calib", 64, shuffle=False, limit=192))
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    out = bn_recalibrate(model, batches, batches=2)
    assert out is model and not model.training
    bn = model.bn1
    assert bn.momentum == 0.1  # restored
    # first BN sees the raw conv1 output: its mean must equal the exact mean over the 2 batches' activations
    with torch.no_grad():
        acts = torch.cat([model.conv1(x) for x, _ in batches[:2]])
    assert torch.allclose(bn.running_mean, acts.mean(dim=(0, 2, 3)), atol=1e-4)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())


def test_save_checkpoint_round_trip(tmp_path, digits):
    model = tiny_cnn()
    fit(model, digits.loader("train", 64), FinetuneSpec(steps=2), progress=False)
    w, cfg = save_checkpoint(tmp_path / "out" / "model.pt", model, {"model": "resnet20", "lr": 0.01})
    assert cfg == tmp_path / "out" / "config.json"
    assert json.loads(cfg.read_text()) == {"lr": 0.01, "model": "resnet20"}
    again = load_checkpoint(tiny_cnn(), w)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    assert isinstance(torch.load(w, weights_only=True), dict)


# ---------------------------------------------------------------- CLI
def test_finetune_cli_trains_saves_and_reports(tmp_path, capsys):
    from search.cli import main

    out = tmp_path / "ft"
    rc = main(["-q", "finetune", "--model", "resnet20", "--dataset", "digits", "--steps", "2", "--batch-size", "16",
               "--lr", "0.05", "--eval-limit", "64", "--no-progress", "--threads", "1", "--out", str(out)])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 2 and metrics["val"]["n"] == 64 and metrics["test"]["n"] == 64
    assert 0 <= metrics["test"]["top1"] <= 100 and metrics["before"] is None
    config = json.loads((out / "config.json").read_text())
    assert config["finetune"]["lr"] == 0.05 and config["finetune"]["steps"] == 2
    assert config["dataset"]["name"] == "digits" and config["model"] == "resnet20"
    load_checkpoint(get_model("resnet20"), out / "model.pt")
    assert "test top-1" in capsys.readouterr().out

    # continue from that checkpoint (a finetune --out dir): "before" accuracy is reported
    rc = main(["-q", "finetune", "--model", "resnet20", "--checkpoint", str(out), "--steps", "1",
               "--batch-size", "16", "--eval-limit", "32", "--no-progress", "--out", str(tmp_path / "ft2")])
    assert rc == 0
    assert json.loads((tmp_path / "ft2" / "metrics.json").read_text())["before"]["test"]["n"] == 32


def test_finetune_cli_user_errors(tmp_path, capsys):
    from search.cli import main

    assert main(["finetune", "--model", "resnet20", "--dataset", "cifar10", "--data-dir", str(tmp_path),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "cifar-10-batches-py" in err and "--download" in err and "Traceback" not in err
    assert main(["finetune", "--model", "resnet21", "--out", str(tmp_path / "o")]) == 2
    assert "resnet20" in capsys.readouterr().err  # unknown model lists the known ones
    assert main(["finetune", "--model", "resnet20", "--lr", "-1", "--out", str(tmp_path / "o")]) == 2
    assert "lr = -1" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fit_on_cuda_uses_amp_and_channels_last(digits):
    model = get_model("resnet20")
    batch = [t.cuda() for t in next(iter(digits.loader("val", 256)))]
    before = _loss_on(model.cuda(), batch)
    res = fit(model, digits.loader("train", 64), FinetuneSpec(steps=60, lr=0.1, batch_size=64), device="cuda",
              progress=False)
    assert next(model.parameters()).is_cuda and next(model.parameters()).dtype == torch.float32
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert res.steps == 60 and _loss_on(model, batch) < 0.5 * before


def test_finetune_cli_recipe_compresses_then_artifact_reloads(tmp_path, capsys):
    from pathlib import Path

    from search.cli import main
    from spaces.policy import Policy

    recipe = Policy.load(Path(__file__).resolve().parents[2] / "spaces" / "recipes" / "resnet20-prune30-kd.yaml")
    ratios = {k: 0.5 for k in list(recipe.prune.ratios)[:2]}  # two blocks: quick to prune
    small = recipe.replace(prune=recipe.prune.__class__(ratios=ratios))
    small.save(tmp_path / "r.yaml")
    out = tmp_path / "c"
    rc = main(["-q", "finetune", "--recipe", str(tmp_path / "r.yaml"), "--dataset", "digits", "--steps", "1",
               "--batch-size", "16", "--lr", "0.03", "--eval-limit", "32", "--no-progress", "--out", str(out)])
    assert rc == 0
    saved = Policy.load(out / "policy.yaml")
    assert set(saved.prune.kept) == set(ratios) and len(saved.prune.kept["layer1.0.conv1"]) == 8
    assert json.loads((out / "config.json").read_text())["finetune"]["lr"] == 0.03
    # the artifact directory is itself a starting point
    rc = main(["-q", "finetune", "--checkpoint", str(out), "--dataset", "digits", "--steps", "1", "--batch-size",
               "16", "--eval-limit", "32", "--no-progress", "--out", str(tmp_path / "c2")])
    assert rc == 0
    m = json.loads((tmp_path / "c2" / "metrics.json").read_text())
    assert m["model"] == "resnet20" and m["before"]["test"]["n"] == 32
    assert Policy.load(tmp_path / "c2" / "policy.yaml").prune.kept == saved.prune.kept


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", ["cuda", "tensorrt"])
def test_qat_on_cuda_with_amp_trains_fake_quant_layers(digits, backend):
    from compress.quantize import fake_quantize
    from spaces.policy import LayerBits, QuantSpec

    torch.manual_seed(0)
    base = get_model("resnet20", num_classes=10)
    fit(base, digits.loader("train", 64), FinetuneSpec(steps=30, lr=0.1, batch_size=64), device="cuda", progress=False)
    calib = [b for _, b in zip(range(2), digits.loader("calib", 64))]
    q = QuantSpec(backend=backend, default=LayerBits(8, 8), layers={"layer3.0.conv1": LayerBits(4, 4),
                                                                   "linear": LayerBits(16, 16)})
    model = fake_quantize(base.cpu(), q, calib)
    batch = [t.cuda() for t in next(iter(digits.loader("val", 256)))]
    before = _loss_on(model.cuda(), batch)
    res = fit(model, digits.loader("train", 64), FinetuneSpec(steps=40, lr=0.02, batch_size=64), device="cuda",
              progress=False)  # autocast fp16 inputs through fake_quantize kernels
    assert res.steps == 40 and math.isfinite(res.final_loss)
    assert _loss_on(model, batch) < before
