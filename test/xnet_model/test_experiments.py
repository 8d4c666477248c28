"""Experiment plans: a 2-run plan end to end (classifier -> dense run that loads it), resumption
after an interruption, skipping of finished runs, re-running changed runs, the aggregation math
and the classification crops."""

import json
import math

import numpy as np
import pytest
import torch

from xnet_model.config import ConfigError
from xnet_model.data.synthetic import render_scene
from xnet_model.data.synthetic_crops import SyntheticCropDataset
from xnet_model.experiments import aggregate, expand, load_plan, mean_std, run_plan
from xnet_model.experiments.cli import main as experiment_main
from xnet_model.experiments.results import compare, markdown, to_csv
from xnet_model.experiments.runner import RESULT_FILE, _prepare, read_result
from xnet_model.train.config import load_train_config
from xnet_model.train.trainer import Trainer
from xnet_model.xnet import build_model


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    threads = torch.get_num_threads()  # runs apply the plan's num_threads process-wide
    yield
    torch.set_num_threads(threads)


def tiny_plan(out_dir, **changes) -> dict:
    """Two jobs: the classifier stand-in, then one seed of a dense xNet run loading it into the
    encoder and the decoder."""
    plan = {
        "name": "tiny", "out_dir": str(out_dir), "seeds": [0], "num_threads": 1,
        "base": {
            "model": {"variant": "atto_x_atto_multitask",
                      "encoder": {"name": "test_convnext", "pretrained": "@classifier"},
                      "decoder": {"name": "test_convnext", "pretrained": "@classifier"},
                      "data": {"input_size": [48, 64]}},
            "data": {"synthetic": {"image_size": [48, 64], "train_length": 12,
                                   "val_length": 4, "val_seed_offset": 3_000_000},
                     "batch_size": 2, "val_batch_size": 4, "workers": 0},
            "optim": {"lr": 1e-3, "max_steps": 4, "warmup_steps": 1},
            "eval": {"interval": 2}, "device": "cpu", "log_interval": 1,
            "checkpoint_interval": 2,
        },
        "groups": {"pretrain": {"title": "classifier", "metrics": ["accuracy"], "plot": False},
                   "table": {"title": "tiny", "metrics": ["abs_rel", "d1", "mIoU"]}},
        "runs": [
            {"name": "classifier", "kind": "classifier", "group": "pretrain",
             "classifier": {"model": "test_convnext", "crop_size": 32, "render_size": [48, 64],
                            "train_scenes": 16, "val_scenes": 8, "steps": 4, "batch_size": 8,
                            "eval_interval": 2, "checkpoint_interval": 2}},
            {"name": "xnet", "group": "table", "train": {"model": {"ablation": "xnet"}}},
        ],
    }
    for key, value in changes.items():
        plan[key] = value
    return plan


def test_plan_runs_end_to_end_and_resumes(tmp_path):
    plan = load_plan(tiny_plan(tmp_path / "out"))
    cls_job, xnet_job = expand(plan)
    assert xnet_job.needs == [cls_job.id]
    checkpoint = tmp_path / "out" / "classifier" / "seed0" / "classifier.pth"
    assert xnet_job.config["model"]["encoder"]["pretrained"] == str(checkpoint)

    # interrupted after the first job: the classifier is done, the dense run is not
    assert run_plan(plan, max_runs=1) == {cls_job.id: "done", xnet_job.id: "pending"}
    cls_result = (cls_job.dir / RESULT_FILE).read_text()
    record = json.loads(cls_result)
    assert 0.0 <= record["metrics"]["accuracy"] <= 1.0 and record["metrics"]["count"] == 8
    assert [p["step"] for p in record["curves"]["eval"]] == [2, 4]

    # the dense run is then killed after its step-2 checkpoint (a crash leaves no result)
    _prepare(xnet_job)
    Trainer(load_train_config(xnet_job.config)).fit(stop_at=2)
    (xnet_job.dir / f".{RESULT_FILE}.x.tmp").write_text("{")  # a write cut short
    assert read_result(xnet_job) is None

    # re-running skips the classifier (its result untouched) and resumes the dense run
    assert run_plan(plan) == {cls_job.id: "skipped", xnet_job.id: "done"}
    assert (cls_job.dir / RESULT_FILE).read_text() == cls_result
    lines = [json.loads(x) for x in (xnet_job.dir / "metrics.jsonl").read_text().splitlines()]
    assert any(r["kind"] == "resume" and r["step"] == 2 for r in lines)
    result = read_result(xnet_job)
    assert result["steps"] == 4 and [p["step"] for p in result["curves"]["eval"]] == [2, 4]
    losses = result["curves"]["train"]  # log_interval 1: every step, the resumed ones once
    assert [p["step"] for p in losses] == [1, 2, 3, 4]
    assert all(math.isfinite(p["loss"]) and p["loss"] > 0 for p in losses)
    assert math.isfinite(result["metrics"]["abs_rel"]) and 0 <= result["metrics"]["mIoU"] <= 1
    # the classifier checkpoint went into both halves through `pretrained: <path>`
    assert result["pretrained"]["encoder"]["source"] == str(checkpoint)
    assert result["pretrained"]["decoder"]["source"] == str(checkpoint)
    assert not (xnet_job.dir / "last.pt").exists()  # resumable state dropped once finished
    assert (xnet_job.dir / "model" / "model.safetensors").is_file()

    # everything finished: nothing runs; the CLI only reports
    assert run_plan(plan) == {cls_job.id: "skipped", xnet_job.id: "skipped"}

    # a changed setting reruns that run only (and starts its folder afresh)
    changed = tiny_plan(tmp_path / "out")
    changed["base"]["optim"]["max_steps"] = 3
    plan2 = load_plan(changed)
    assert run_plan(plan2) == {cls_job.id: "skipped", xnet_job.id: "done"}
    assert read_result(expand(plan2)[1])["steps"] == 3
    assert read_result(xnet_job) is None  # the old digest's result is gone

    # `xnet experiment --report-only` writes the tables and the plot from the results
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(changed))
    assert experiment_main([str(plan_file), "--report-only", "--docs", str(tmp_path / "d")]) == 0
    assert (tmp_path / "d" / "experiments_tiny.csv").is_file()
    assert (tmp_path / "d" / "experiments_tiny_table.png").stat().st_size > 1000
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    row = summary["groups"]["table"]["rows"][0]
    assert row["n"] == 1 and row["metrics"]["mIoU"]["std"] is None


def test_classifier_checkpoint_loads_as_timm_weights(tmp_path):
    import timm

    classifier = timm.create_model("test_convnext", num_classes=10)
    path = tmp_path / "classifier.pth"
    torch.save(classifier.state_dict(), path)
    model = build_model("atto_x_atto_multitask", encoder={"name": "test_convnext",
                                                          "pretrained": str(path)},
                        decoder={"name": "test_convnext", "pretrained": str(path)})
    stem = classifier.state_dict()["stem.0.weight"]
    assert torch.equal(model.decoder.stem[0].weight, stem)
    assert torch.equal(model.encoder.body.state_dict()["stem_0.weight"], stem)
    assert not model.decoder.load_report.missing and not model.decoder.load_report.mismatched


def test_mean_std_and_comparison_by_hand():
    # mean (0.3 + 0.4 + 0.5) / 3 = 0.4; sample variance (0.01 + 0 + 0.01) / 2 = 0.01
    mean, std = mean_std([0.3, 0.4, 0.5])
    assert mean == pytest.approx(0.4) and std == pytest.approx(0.1)
    assert mean_std([2.0]) == (2.0, None)
    # [1, 2, 4]: mean 7/3, sample variance ((4/3)^2 + (1/3)^2 + (5/3)^2) / 2 = 42/18 = 7/3
    assert mean_std([1.0, 2.0, 4.0])[1] == pytest.approx(math.sqrt(7 / 3))
    base = {"mean": 0.2, "std": 0.1}
    # diff 0.4 > spread 0.1 + 0.1: real; diff 0.15 is not
    assert compare({"mean": 0.6, "std": 0.1}, base) == pytest.approx(
        {"diff": 0.4, "spread": 0.2, "beyond_spread": True})
    assert compare({"mean": 0.35, "std": 0.1}, base)["beyond_spread"] is False
    assert compare({"mean": 0.9, "std": None}, base)["beyond_spread"] is False


def _fake_result(name, seed, metrics, curve):
    return {"name": name, "seed": seed, "metrics": metrics,
            "curves": {"eval": [{"step": s, "mIoU": v} for s, v in curve]}}


def test_aggregate_rows_baseline_and_curves(tmp_path):
    plan = load_plan({
        "name": "agg", "out_dir": str(tmp_path), "seeds": [0, 1, 2],
        "groups": {"t": {"title": "T", "metrics": ["mIoU", "abs_rel"], "baseline": "a"},
                   "u": {"title": "U", "metrics": ["mIoU"], "baseline": "b",
                         "runs": ["b", "a"]}},  # rows named by the group, in its order
        "runs": [{"name": "a", "group": "t"}, {"name": "b", "group": "t"}],
    })
    results = {
        "a/seed0": _fake_result("a", 0, {"mIoU": 0.1, "abs_rel": 0.30}, [(5, 0.0), (10, 0.1)]),
        "a/seed1": _fake_result("a", 1, {"mIoU": 0.2, "abs_rel": 0.20}, [(5, 0.1), (10, 0.2)]),
        "a/seed2": _fake_result("a", 2, {"mIoU": 0.3, "abs_rel": 0.25}, [(5, 0.2), (10, 0.3)]),
        "b/seed0": _fake_result("b", 0, {"mIoU": 0.5, "abs_rel": 0.20}, [(10, 0.5)]),
        "b/seed2": _fake_result("b", 2, {"mIoU": 0.7, "abs_rel": 0.30}, [(10, 0.7)]),
        "stale/seed0": _fake_result("zzz", 0, {"mIoU": 1.0}, []),  # not a job of this plan
    }
    rows = aggregate(plan, results)["groups"]["t"]["rows"]
    a, b = rows
    assert a["n"] == 3 and b["n"] == 2 and b["seeds"] == [0, 2]
    # a: mIoU mean 0.2, std 0.1; abs_rel mean 0.25, std 0.05 (deviations 0.05, -0.05, 0)
    assert a["metrics"]["mIoU"]["mean"] == pytest.approx(0.2)
    assert a["metrics"]["mIoU"]["std"] == pytest.approx(0.1)
    assert a["metrics"]["abs_rel"]["std"] == pytest.approx(0.05)
    # b: mIoU mean 0.6, std sqrt((0.01 + 0.01) / 1) = 0.1414; vs a: +0.4 > 0.1 + 0.1414
    assert b["metrics"]["mIoU"]["std"] == pytest.approx(math.sqrt(0.02))
    assert b["vs_baseline"]["mIoU"]["diff"] == pytest.approx(0.4)
    assert b["vs_baseline"]["mIoU"]["beyond_spread"] is True
    # abs_rel: b mean 0.25 = a's mean: no difference
    assert b["vs_baseline"]["abs_rel"]["beyond_spread"] is False
    assert "vs_baseline" not in a
    assert [s for s, _ in a["curves"]["mIoU"]] == [5, 10]  # the mean over seeds at each step
    assert [v for _, v in a["curves"]["mIoU"]] == pytest.approx([0.1, 0.2])
    summary = aggregate(plan, results)
    u_rows = summary["groups"]["u"]["rows"]
    assert [r["name"] for r in u_rows] == ["b", "a"]
    assert u_rows[1]["vs_baseline"]["mIoU"]["diff"] == pytest.approx(-0.4)
    table = markdown(summary)
    assert "| b | 2 | 60.0 ± 14.1 | 0.250 ± 0.071 | +40.0* | +0.000 |" in table
    assert "t,b,b,2,mIoU,0.6,0.141421,0.5 0.7,0.4,1" in to_csv(summary)


def test_plan_errors_are_clear(tmp_path):
    good = tiny_plan(tmp_path)
    bad_ref = {**good, "runs": [good["runs"][1], good["runs"][0]]}  # xnet before classifier
    with pytest.raises(ConfigError, match="@classifier must name an earlier run"):
        load_plan(bad_ref)
    with pytest.raises(ConfigError, match="unknown key"):
        load_plan({**good, "runz": []})
    with pytest.raises(ConfigError, match="group 'nope'"):
        load_plan({**good, "runs": [{"name": "x", "kind": "classifier", "group": "nope"}]})
    with pytest.raises(ConfigError, match="no run named 'ghost'"):
        load_plan({**good, "groups": {**good["groups"], "g": {"runs": ["classifier", "ghost"]}}})
    with pytest.raises(ConfigError, match="missing key 'name'"):
        load_plan({"out_dir": str(tmp_path), "runs": [{"name": "x"}]})


def test_crops_are_centred_on_a_pixel_of_their_class():
    # side_range 0.5 of a 48-row view = 24 px = crop_size: no resampling, exact pixels
    ds = SyntheticCropDataset(6, crop_size=24, render_size=(48, 64), seed_offset=50,
                              train=False, side_range=(0.5, 0.5))
    for i in range(6):
        label, cy, cx, side = ds.pick(i)
        frame = render_scene(50 + i, 48, 64)
        assert frame.labels[cy, cx] == label and side == 24
        patch, got = ds.crop(i)
        assert got == label and np.array_equal(patch[12, 12], frame.rgb[cy, cx])
    image, label = ds[0]
    assert image.shape == (3, 24, 24) and image.dtype == torch.float32
    ds.set_epoch(3)  # the held-out split does not change with the epoch
    assert ds.pick(0) == SyntheticCropDataset(6, 24, (48, 64), 50, train=False,
                                              side_range=(0.5, 0.5)).pick(0)
    train = SyntheticCropDataset(40, crop_size=24, render_size=(48, 64), train=True)
    first = [train.pick(i) for i in range(40)]
    train.set_epoch(1)
    assert [train.pick(i) for i in range(40)] != first  # new crops every epoch


@pytest.mark.slow
def test_parallel_workers_respect_dependencies(tmp_path):
    plan = tiny_plan(tmp_path / "out", seeds=[0, 1])
    plan["runs"][0]["seeds"] = [0]  # one classifier, two seeds of the dense run
    plan = load_plan(plan)
    cls_job, *dense = expand(plan)
    assert run_plan(plan, workers=2) == {cls_job.id: "done", dense[0].id: "done",
                                         dense[1].id: "done"}
    classifier_done = (cls_job.dir / RESULT_FILE).stat().st_mtime
    for job in dense:  # started (spec.json written) only after the classifier had finished
        assert (job.dir / "spec.json").stat().st_mtime >= classifier_done
        assert read_result(job)["pretrained"]["decoder"]["source"].endswith("classifier.pth")
