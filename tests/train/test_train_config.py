import math

import pytest

from landscape.errors import LandscapeError
from landscape.train.config import load_config_file, resolve_config
from landscape.train.lr_rules import all_rules, scaled_lr


def test_lr_rules():
    assert scaled_lr(5e-6, 48, 32, "sqrt") == pytest.approx(6.1237e-6, rel=1e-4)
    assert scaled_lr(1e-3, 64, 32, "linear") == pytest.approx(2e-3)
    assert scaled_lr(1e-3, 64, 32, "none") == 1e-3
    assert all_rules(1.0, 8, 32) == {"none": 1.0, "linear": 0.25, "sqrt": math.sqrt(0.25)}
    with pytest.raises(LandscapeError, match="cubic"):
        scaled_lr(1e-3, 8, 32, "cubic")


def test_config_file_yaml_and_toml_with_cli_override(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("dataset: synthetic:/d\nbatch-sizes: [8, 16]\nseeds: 3\nlr: 1\n")
    t = tmp_path / "c.toml"
    t.write_text('dataset = "synthetic:/d"\nbatch_sizes = [8, 16]\nseeds = [3]\nlr = 1\n')
    for path in (y, t):
        cfg = resolve_config(load_config_file(path), {"lr": 0.5, "epochs": None})
        # no model named: micro, so its recipe's 15 epochs (test_model_recipe_* below)
        assert cfg.batch_sizes == [8, 16] and cfg.seeds == [3] and cfg.lr == 0.5 and cfg.epochs == 15


def test_model_recipe_fills_only_what_file_and_command_line_leave_open(tmp_path):
    from landscape.train.config import TrainConfig
    from landscape.train.recipes import RECIPES
    micro = resolve_config({"dataset": "synthetic:/d"}, {})
    assert {k: getattr(micro, k) for k in RECIPES["micro"]} == RECIPES["micro"]
    assert (micro.loss, micro.ranking_alpha, micro.lr, micro.epochs) == ("mse", 0.0, 2e-3, 15)
    # the file beats the recipe, the command line beats both
    cfg = resolve_config({"dataset": "synthetic:/d", "lr": 3e-3, "loss": "l1"}, {"epochs": 4, "lr": None})
    assert (cfg.lr, cfg.loss, cfg.epochs, cfg.warmup_epochs) == (3e-3, "l1", 4, RECIPES["micro"]["warmup_epochs"])
    # a model without a recipe keeps TrainConfig's defaults
    tiny = resolve_config({"dataset": "synthetic:/d", "model": "tiny"}, {})
    default = TrainConfig()
    assert (tiny.loss, tiny.lr, tiny.epochs, tiny.ranking_alpha) == (default.loss, default.lr, default.epochs,
                                                                     default.ranking_alpha) == ("l1", 1e-4, 10, 0.5)
    with pytest.raises(LandscapeError, match="loss"):
        resolve_config({"dataset": "synthetic:/d", "loss": "huber"}, {})


def test_training_loss_terms_equal_their_formulas():
    import torch

    from landscape.train.losses import IQALoss, make_criterion
    g = torch.Generator().manual_seed(0)
    p, y = torch.rand(9, generator=g), torch.rand(9, generator=g)
    y[3] = y[4]                                           # one tied pair is left out of the hinge
    pairs = [(i, j) for i in range(9) for j in range(i + 1, 9) if y[i] != y[j]]
    hinge = sum(max(0.0, -float(torch.sign(y[i] - y[j]) * (p[i] - p[j]))) for i, j in pairs) / len(pairs)
    mse = float(((p - y) ** 2).mean())
    assert float(IQALoss(0.0, regression="mse")(p, y)) == pytest.approx(mse, rel=1e-6)
    assert float(IQALoss(0.3, regression="mse")(p, y)) == pytest.approx(mse + 0.3 * hinge, rel=1e-6)
    assert float(IQALoss(0.3)(p, y)) == pytest.approx(float((p - y).abs().mean()) + 0.3 * hinge, rel=1e-6)
    assert float(make_criterion("train", ranking_alpha=0.0, regression="mse")(p, y)) == pytest.approx(mse, rel=1e-6)
    # the L1 record is the one earlier versions wrote (stored settings keys keep matching)
    assert IQALoss(0.5).describe() == {"name": "l1+ranking", "ranking_alpha": 0.5, "ranking_margin": 0.0}
    assert IQALoss(0.0, regression="mse").describe()["name"] == "mse"
    assert IQALoss(0.1, regression="mse").describe()["name"] == "mse+ranking"
    with pytest.raises(LandscapeError, match="regression loss"):
        IQALoss(regression="huber")


def test_config_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: synthetic:/d\nlearning_rate: 1\n")
    with pytest.raises(LandscapeError, match="unknown key 'learning_rate'"):
        load_config_file(bad)
    bad.write_text("dataset: synthetic:/d\nepochs: ten\n")
    with pytest.raises(LandscapeError, match="epochs"):
        load_config_file(bad)
    with pytest.raises(LandscapeError, match="not divisible"):
        resolve_config({}, {"dataset": "synthetic:/d", "batch_sizes": [10], "accumulate": 3})
    with pytest.raises(LandscapeError, match="lr_scaling"):
        resolve_config({}, {"dataset": "synthetic:/d", "lr_scaling": ["cubic"]})


def test_yaml_exponent_strings_and_bad_types(tmp_path):
    # YAML 1.1 reads 1e-4 (no dot) as a string; a float key accepts it, other strings are errors
    y = tmp_path / "c.yaml"
    y.write_text("dataset: synthetic:/d\nlr: 1e-4\ndrop_path: 1e-1\n")
    cfg = resolve_config(load_config_file(y), {})
    assert cfg.lr == 1e-4 and cfg.drop_path == 0.1
    for text, key in (("lr: fast", "lr"), ("lr: .nan", "lr"), ("epochs: true", "epochs"),
                      ("seeds: [0, x]", "seeds"), ("model: 3", "model")):
        y.write_text(f"dataset: synthetic:/d\n{text}\n")
        with pytest.raises(LandscapeError, match=f"config key '{key}'|'{key}'"):
            resolve_config(load_config_file(y), {})
    with pytest.raises(LandscapeError, match="unknown model preset 'huge'"):
        resolve_config({}, {"dataset": "synthetic:/d", "model": "huge"})
    with pytest.raises(LandscapeError, match="cross_test must be FORMAT:ROOT"):
        resolve_config({}, {"dataset": "synthetic:/d", "cross_test": ["spaq"]})


def test_records_of_older_versions_compare_equal_to_their_defaults():
    from landscape.train.config import TrainConfig, config_differences

    cfg = TrainConfig(dataset="synthetic:/d").validate().to_dict()
    older = {k: v for k, v in cfg.items() if k not in ("allow_overlap", "img_size", "split", "split_ratio",
                                                       "split_seeds")}
    older["split_seed"] = 0
    assert config_differences(older, cfg) == []
    assert config_differences({**older, "split_seed": 3}, cfg) == ["split_seeds"]
    assert config_differences(older, {**cfg, "allow_overlap": True}) == ["allow_overlap"]
    assert config_differences(older, {**cfg, "pretrained_matched_keys": 12}) == []
    assert config_differences({**cfg, "lr": 1.0}, cfg) == ["lr"]
    assert config_differences({**cfg, "gone": 1}, cfg) == ["gone"]
