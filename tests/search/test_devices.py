"""Where trials may run: CUDA asked for without a device, and Ray trials that would not see their GPU."""

from __future__ import annotations

import pytest
import torch

from search.driver import SearchConfigError, check_devices, run_search
from tests.search._analytic_objective import AnalyticObjective
from tests.search._tiny_space import tiny_space

CUDA_LATENCY = {"budget__latency": {"measure": "always", "device": "cuda"}, "quant__backend": "cuda"}


@pytest.fixture
def fake_cuda(monkeypatch):
    """Pretend a CUDA device exists (the rules below do not depend on which GPU)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def test_cpu_search_needs_nothing():
    check_devices(tiny_space(), "cpu", "optuna")
    check_devices(tiny_space(), "cpu", "ray", {"gpus_per_trial": 0})
    unused = tiny_space(budget__latency={"measure": "never", "device": "cuda"}, quant__backend="cuda")
    check_devices(unused, "cpu", "ray", {"gpus_per_trial": 0})  # latency is never measured


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_cuda_without_a_device_is_one_line_before_anything_runs(tmp_path):
    with pytest.raises(SearchConfigError, match=r"--device = cuda: no CUDA device is available here") as exc:
        run_search(tiny_space(), tmp_path / "run", device="cuda", objective_factory=AnalyticObjective,
                   progress=False)
    assert len(str(exc.value).splitlines()) == 1 and not (tmp_path / "run" / "config.yaml").exists()
    with pytest.raises(SearchConfigError, match=r"budget\.latency\.device = cuda: no CUDA device"):
        check_devices(tiny_space(**CUDA_LATENCY), "cpu", "optuna")
    # trials on a Ray cluster elsewhere: only the cluster needs the latency device
    check_devices(tiny_space(**CUDA_LATENCY), "cpu", "ray", {"address": "10.0.0.1:6379", "gpus_per_trial": 1})


def test_ray_trials_on_cuda_need_gpus_per_trial(fake_cuda):
    with pytest.raises(SearchConfigError, match=r"--device = cuda with --backend ray needs --gpus-per-trial > 0"):
        check_devices(tiny_space(), "cuda", "ray", {})
    with pytest.raises(SearchConfigError, match=r"budget\.latency\.device = cuda with --backend ray needs"):
        check_devices(tiny_space(**CUDA_LATENCY), "cpu", "ray", {"gpus_per_trial": 0})
    check_devices(tiny_space(**CUDA_LATENCY), "cuda", "ray", {"gpus_per_trial": 0.25})
    check_devices(tiny_space(), "cuda:1", "optuna")  # local trials may pick a GPU


def test_ray_trials_see_their_gpu_as_cuda(fake_cuda):
    with pytest.raises(SearchConfigError, match=r"--device = cuda:1 with --backend ray: use cuda"):
        check_devices(tiny_space(), "cuda:1", "ray", {"gpus_per_trial": 1})
    space = tiny_space(budget__latency={"measure": "always", "device": "cuda:0"}, quant__backend="cuda")
    with pytest.raises(SearchConfigError, match=r"budget\.latency\.device = cuda:0 with --backend ray: use cuda"):
        check_devices(space, "cuda", "ray", {"gpus_per_trial": 1})


def test_cli_reports_the_ray_gpu_rule_with_exit_2(fake_cuda, tmp_path, capfd):
    from search.cli import main

    rc = main(["search", "quickstart", "--backend", "ray", "--device", "cuda", "--out", str(tmp_path / "r")])
    err = capfd.readouterr().err
    assert rc == 2 and "--gpus-per-trial > 0" in err
