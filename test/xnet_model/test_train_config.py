"""Training config: YAML + overrides, full-path errors, every shipped config, LR schedule and
optimiser parameter groups."""

from pathlib import Path

import pytest
import torch

from xnet_model import build_model
from xnet_model.config import ConfigError
from xnet_model.train.checkpoint import plan_transfer
from xnet_model.train.config import best_metric, load_train_config, parse_overrides, validate
from xnet_model.train.trainer import WarmupPoly, param_groups
from xnet_model.weights import WeightsError
from xnet_model.xnet import XNet

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "config" / "train").glob("*.yaml"))
MINIMAL = {"model": "atto_x_atto", "optim": {"max_steps": 10}}


def test_overrides_parse_dotted_keys_and_yaml_values():
    assert parse_overrides(["optim.lr=3e-4", "data.crop_size=[480, 640]", "resume=true",
                            "init_from=null", "model.ablation=fpn"]) == {
        "optim": {"lr": 3e-4}, "data": {"crop_size": [480, 640]}, "resume": True,
        "init_from": None, "model": {"ablation": "fpn"}}
    with pytest.raises(ConfigError, match="key.sub=value"):
        parse_overrides(["optim.lr"])


def test_defaults_and_overrides_land_in_typed_fields():
    cfg = load_train_config(MINIMAL, ["optim.lr=1", "data.batch_size=3", "precision=bf16",
                                      "data.synthetic.image_size=[48, 64]"])
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)  # YAML int -> float field
    assert cfg.data.batch_size == 3 and cfg.precision == "bf16"
    assert cfg.data.synthetic.image_size == [48, 64]
    assert cfg.optim.weight_decay == 0.01 and cfg.eval.flip_tta is False  # defaults
    assert cfg.model == {"variant": "atto_x_atto"}  # a bare variant name becomes a spec


@pytest.mark.parametrize("override, path", [
    ("optim.lrr=1", "optim.lrr"),
    ("data.synthetic.colour=1", "data.synthetic.colour"),
    ("trainer=1", "trainer"),
    ("model.encoder.nme=x", "model.encoder"),
])
def test_unknown_keys_are_rejected_with_their_full_path(override, path):
    with pytest.raises(ConfigError) as err:
        load_train_config(MINIMAL, [override])
    assert path in str(err.value)


@pytest.mark.parametrize("override, message", [
    ("optim.lr=fast", "optim.lr"),
    ("precision=fp8", "precision"),
    ("optim.epochs=3", "exactly one of max_steps and epochs"),
    ("data.kind=nyu", "data.root"),
    ("data.batch_size=0", "data.batch_size"),
    ("loss.weights={depht: 1}", "loss.weights"),
    ("model.variant=nope", "model"),
])
def test_bad_values_are_rejected(override, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config(MINIMAL, [override])


def test_a_semantic_dataset_needs_a_semantic_head():
    with pytest.raises(ConfigError, match="semantic head"):
        load_train_config(MINIMAL, ["data.kind=ade20k", "data.root=/x"])


@pytest.mark.parametrize("kind, extra, head", [("nyu", "semantic", "depth"),
                                               ("kitti", "semantic", "depth"),
                                               ("ade20k", "depth", "semantic")])
def test_a_head_the_dataset_cannot_supervise_is_rejected(kind, extra, head):
    # It would never train, and under DDP its unused parameters stop step 2 ("Expected to
    # have finished reduction ..."): a config error, before any process starts.
    over = ["model.variant=atto_x_atto_multitask", f"data.kind={kind}", "data.root=/x",
            "data.train_split=/t.txt", "data.val_split=/v.txt"]
    with pytest.raises(ConfigError, match=f"no ground truth for the model's {extra} head") as e:
        load_train_config(MINIMAL, over)
    assert f"model.{extra}=null" in str(e.value)
    cfg = load_train_config(MINIMAL, [*over, f"model.{extra}=null"])
    assert cfg.model_config().tasks == [head]
    assert load_train_config(MINIMAL, ["model=atto_x_atto_multitask"]).model_config().tasks == [
        "depth", "semantic"]  # synthetic scenes supervise both


def test_eval_validation_allows_a_head_the_dataset_does_not_score():
    cfg = load_train_config(MINIMAL, ["data.kind=nyu", "data.root=/x",
                                      "data.train_split=/t.txt", "data.val_split=/v.txt"])
    cfg.model = {"variant": "atto_x_atto_multitask"}
    validate(cfg, training=False)
    with pytest.raises(ConfigError, match="semantic head"):
        validate(cfg)


@pytest.mark.parametrize("override, message", [
    ("optim.accumulate=0", "accumulate >= 1"),
    ("optim.max_skipped_steps=-1", "max_skipped_steps >= 0"),
    ("model.grad_checkpointing=maybe", "model.grad_checkpointing must be true or false"),
    ("performance.fused_adamw=fast", "performance.fused_adamw"),
    ("performance.compile_option={}", "performance.compile_option"),
])
def test_bad_cluster_options_are_rejected(override, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config(MINIMAL, [override])


def test_cluster_options_load_and_grad_checkpointing_is_not_a_model_field():
    cfg = load_train_config(MINIMAL, ["optim.accumulate=4", "model.grad_checkpointing=true",
                                      "performance.channels_last=true",
                                      "performance.compile_options={mode: max-autotune}"])
    assert cfg.optim.accumulate == 4 and cfg.grad_checkpointing is True
    assert cfg.performance.channels_last and cfg.performance.compile_options == {
        "mode": "max-autotune"}
    assert "grad_checkpointing" not in cfg.model_config().to_dict()  # not saved with the model
    defaults = load_train_config(MINIMAL)
    assert (defaults.grad_checkpointing, defaults.optim.accumulate) == (False, 1)
    p = defaults.performance
    assert (p.cudnn_benchmark, p.tf32, p.channels_last, p.fused_adamw, p.compile) == (
        True, True, False, None, False)
    assert defaults.data.persistent_workers is True


def _meta_state(config: str, *over: str) -> dict:
    """A shipped config's model state dict, built on the meta device (no weights, no hub)."""
    cfg = load_train_config(REPO / "config" / "train" / config, list(over))
    model = cfg.model_config()
    model.encoder.pretrained = model.decoder.pretrained = False
    with torch.device("meta"):
        return XNet(model).state_dict()


def test_the_documented_init_from_example_transfers_every_backbone_tensor():
    # docs/training.md: NYU Swin-L x ConvNeXtV2-T depth -> ADE20K with the same pair. The old
    # example (-> Swin-L x ConvNeXt-L) left 372 of its 703 tensors without a source.
    example = load_train_config(REPO / "config/train/ade20k_swinl_x_convnextv2t_from_nyu.yaml")
    assert example.init_from == "runs/nyu_swinl_x_convnextv2t/model"
    nyu = _meta_state("nyu_swinl_x_convnextv2t.yaml")
    report, _ = plan_transfer(_meta_state("ade20k_swinl_x_convnextv2t_from_nyu.yaml"), nyu,
                              "nyu")
    assert (len(report.transferred), report.reinitialised) == (
        557, ["heads.semantic.bias", "heads.semantic.weight"])
    assert report.skipped == ["heads.depth.bias", "heads.depth.weight"]
    with pytest.raises(WeightsError, match="372 tensors"):
        plan_transfer(_meta_state("ade20k_swinl_x_convnextl.yaml"), nyu, "nyu")


def test_base_files_are_merged_under_the_including_file(tmp_path):
    (tmp_path / "base.yaml").write_text("model: atto_x_atto\noptim: {max_steps: 5, lr: 0.5}\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\noptim: {lr: 0.25}\nseed: 7\n")
    cfg = load_train_config(tmp_path / "child.yaml")
    assert (cfg.optim.max_steps, cfg.optim.lr, cfg.seed) == (5, 0.25, 7)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_loads(path):
    cfg = load_train_config(path)
    model = cfg.model_config()
    assert model.tasks


def test_shipped_configs_follow_the_paper_settings():
    def load(name, *over):
        return load_train_config(REPO / "config" / "train" / name, list(over))

    ade = load("ade20k_swinl_x_convnextl.yaml")
    assert ade.data.crop_size == [512, 512] and ade.model_config().semantic.num_classes == 150
    city = load("cityscapes_swinl_x_convnextl.yaml")
    assert city.data.crop_size == [512, 1024] and city.model_config().semantic.num_classes == 19
    assert load("kitti_swinl_x_convnextb.yaml").model_config().depth.max_depth == 80.0
    assert load("nyu_swinl_x_convnextv2t.yaml").model_config().depth.max_depth == 10.0
    for row, kind, pretrained in (("fpn", "fpn", False), ("rev", "pretrained", False),
                                  ("rev_pretrained", "pretrained", True),
                                  ("xnet", "pretrained", True), ("xnet_i", "pretrained", True)):
        model = load("nyu_ablation_convnextt.yaml", f"model.ablation={row}").model_config()
        assert (model.decoder.kind, model.decoder.pretrained) == (kind, pretrained), row
        assert model.encoder.name.startswith("convnext_tiny")
    demo = load("demo_synthetic.yaml").model_config()
    assert demo.data.input_size == [120, 160] and demo.semantic.num_classes == 10
    assert len(demo.semantic.class_names) == 10


def test_best_metric_defaults_by_task():
    assert best_metric(load_train_config(MINIMAL), build_model("atto_x_atto").cfg) == (
        "abs_rel", "min")
    multi = build_model("atto_x_atto_multitask").cfg
    assert best_metric(load_train_config(MINIMAL), multi) == ("mIoU", "max")


def test_warmup_then_poly_schedule():
    f = WarmupPoly(warmup=10, total=110, power=1.0, start=0.1, floor=0.0)
    assert f(0) == pytest.approx(0.1)
    assert f(5) == pytest.approx(0.55)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5)  # linear poly halfway through the decay
    assert f(110) == 0.0 and f(500) == 0.0
    g = WarmupPoly(warmup=0, total=100, power=0.9, floor=0.05)
    values = [g(s) for s in range(0, 101, 10)]
    assert values[0] == 1.0 and values == sorted(values, reverse=True) and values[-1] == 0.05


def test_param_groups_scale_encoder_lr_and_skip_decay_on_norms_and_biases():
    model = build_model({"encoder": {"name": "test_convnext"},
                         "decoder": {"name": "test_convnext"}})
    groups = {g["name"]: g for g in param_groups(model, lr=1e-3, weight_decay=0.05,
                                                 encoder_lr_mult=0.1)}
    assert set(groups) == {"encoder", "encoder_no_decay", "rest", "rest_no_decay"}
    assert groups["encoder"]["lr"] == pytest.approx(1e-4) and groups["rest"]["lr"] == 1e-3
    assert groups["rest_no_decay"]["weight_decay"] == 0.0
    assert groups["rest"]["weight_decay"] == 0.05
    ids = {name: {id(p) for p in g["params"]} for name, g in groups.items()}
    params = dict(model.named_parameters())
    assert id(params["heads.depth.bias"]) in ids["rest_no_decay"]
    assert id(params["heads.depth.weight"]) in ids["rest"]
    assert id(params["rs_mix.norm.weight"]) in ids["rest_no_decay"]
    enc_norm = next(n for n in params if n.startswith("encoder.") and "norm" in n)
    assert id(params[enc_norm]) in ids["encoder_no_decay"]
    total = sum(len(g["params"]) for g in groups.values())
    assert total == len(params)  # every parameter in exactly one group
    assert all(isinstance(p, torch.nn.Parameter) for g in groups.values() for p in g["params"])


@pytest.mark.parametrize("argv, overrides, flags", [
    (["--config", "c.yaml", "--resume", "optim.lr=1", "seed=2"], ["optim.lr=1", "seed=2"],
     {"resume": True}),
    (["a.b=1", "--config", "c.yaml", "--no-progress", "c.d=2"], ["a.b=1", "c.d=2"],
     {"progress": False}),
    (["--config", "c.yaml", "--resume", "runs/x/best.pt", "--init-from", "m", "--out-dir", "o"],
     [], {"resume": "runs/x/best.pt", "init_from": "m", "out_dir": "o"}),
])
def test_train_cli_flags_and_overrides_mix_in_any_order(argv, overrides, flags):
    from xnet_model.train.cli import _flag_overrides, _train_parser

    args = _train_parser().parse_intermixed_args(argv)
    assert _flag_overrides(args) == flags
    assert sorted(args.overrides) == overrides
