"""Each experiment's `validate`: every bad value is refused by its `--config.` key before any
file is read, any array is built or the workdir is created."""

import math

import pytest

import experiments
import launch
from experiments import configs
from experiments.sentence_similarity import train as sentence_similarity_train
from kernels import margin_softmax
from models import sentence_encoder


def _validate(name, variant, *overrides):
    module = experiments.load_config(name)
    config = module.get_config(variant)
    configs.apply_overrides(config, list(overrides))
    module.validate(config)


@pytest.mark.parametrize("name", experiments.EXPERIMENTS)
def test_every_variant_is_valid(name):
    """Every variant validates as it is, except presets made for the user's own image
    folder, which must say that `data.path` is what they lack."""
    module = experiments.load_config(name)
    for variant in module.VARIANTS:
        config = module.get_config(variant)
        if config.get("data", {}).get("kind") in ("images", "olivetti") and not config.data.path:
            with pytest.raises(configs.ConfigError, match=r"--config.data.path='': .*needs"):
                module.validate(config)
            continue
        module.validate(config)


BAD = {
    "sentence_similarity": [
        ("mode=evaluate", "mode='evaluate'"),
        ("loss.kind=amm", "loss.kind='amm'"),
        ("loss.scale=0", "loss.scale=0.0"),
        ("loss.scale=-30", "loss.scale=-30.0"),
        ("loss.margin=1.0", r"loss.margin=1.0: must be a finite number in \[0, 1\)"),
        ("loss.margin=-0.1", "loss.margin=-0.1"),
        ("loss.chunk_size=-1", "loss.chunk_size=-1"),
        ("model.final_state=first", "model.final_state='first'"),
        ("model.embed_dim=0", "model.embed_dim=0"),
        ("model.hidden_dim=-4", "model.hidden_dim=-4"),
        ("data.maxlen=0", "data.maxlen=0"),
        ("data.min_count=0", "data.min_count=0"),
        ("data.train_fraction=1.0", r"data.train_fraction=1.0: .*\(0, 1\)"),
        ("data.train_fraction=0", "data.train_fraction=0.0"),
        ("data.generated_items=0", "data.generated_items=0"),
        ("optimizer.learning_rate=0", "optimizer.learning_rate=0.0"),
        ("optimizer.learning_rate=1e999", "optimizer.learning_rate=inf"),
        ("optimizer.eps=-1e-7", "optimizer.eps=-1e-07"),
        ("batch_size=0", "batch_size=0"),
        ("epochs=0", "epochs=0"),
        ("eval_batch_size=0", "eval_batch_size=0"),
        ("search.top=0", "search.top=0"),
        ("trainer.num_steps=-1", r"trainer.num_steps=-1: must be an integer >= 0 \(0: epochs"),
        ("trainer.log_every=0", "trainer.log_every=0"),
        ("trainer.eval_every=-1", "trainer.eval_every=-1"),
        ("trainer.checkpoint_every=-5", "trainer.checkpoint_every=-5"),
        ("trainer.keep_checkpoints=0", "trainer.keep_checkpoints=0"),
        ("trainer.best_mode=maximum", "trainer.best_mode='maximum'"),
        ("mode=eval", "data.eval_path='': mode=eval needs"),
        ("mode=search", "search.questions='': mode=search needs"),
    ],
    "gan": [
        ("loss=least_squares", "loss='least_squares'"),
        ("penalty.kind=clip", "penalty.kind='clip'"),
        ("penalty.weight=-1", "penalty.weight=-1.0"),
        ("optimizer.critic.learning_rate=0", "optimizer.critic.learning_rate=0.0"),
        ("optimizer.generator.b2=1.0", "optimizer.generator.b2=1.0"),
        ("optimizer.critic.eps=0", "optimizer.critic.eps=0.0"),
        ("trainer.ema_decay=1.0", "trainer.ema_decay=1.0"),
        ("batch_size=0", "batch_size=0"),
        ("model.mlp.width=0", "model.mlp.width=0"),
        ("trainer.num_steps=0", "trainer.num_steps=0: must be an integer >= 1"),
        ("trainer.checkpoint_every=0", "trainer.checkpoint_every=0: must be an integer >= 1"),
        ("trainer.log_every=0", "trainer.log_every=0"),
        ("model.sn_power_iterations=0", "model.sn_power_iterations=0"),
    ],
    "sparse_lm": [
        ("trainer.num_steps=-3", "trainer.num_steps=-3: must be an integer >= 1"),
        ("trainer.num_steps=0", "trainer.num_steps=0"),
        ("data.valid_fraction=1.5", "data.valid_fraction=1.5"),
        ("data.max_chars=0", "data.max_chars=0"),
        ("model.context=0", "model.context=0"),
        ("model.num_heads=3", "model.num_heads=3: must divide model.width=64"),
        ("model.positions=rotary", "model.positions='rotary'"),
        ("model.pattern=dense", "unknown pattern 'dense'"),
        ("optimizer.learning_rate=-1", "optimizer.learning_rate=-1.0"),
        ("optimizer.end_fraction=2", "optimizer.end_fraction=2.0"),
        ("optimizer.clip_norm=0", "optimizer.clip_norm=0.0"),
        ("optimizer.warmup_steps=-1", "optimizer.warmup_steps=-1"),
        ("batch_size=0", "batch_size=0"),
        ("eval.batch_size=0", "eval.batch_size=0"),
        ("eval.max_windows=-1", "eval.max_windows=-1"),
    ],
}


@pytest.mark.parametrize("name, override, message", [
    (name, override, message) for name, cases in BAD.items() for override, message in cases])
def test_bad_values_are_refused_by_key(name, override, message):
    variant = "" if name == "sparse_lm" else "smoke"  # sparse_lm:smoke has width 32
    with pytest.raises(configs.ConfigError, match=message.replace(".", r"\.")
                       if "\\" not in message else message):
        _validate(name, variant, override)


def test_margin_ranges_follow_the_loss_kind():
    _validate("sentence_similarity", "smoke", "loss.kind=arcface", "loss.margin=1.2")
    with pytest.raises(configs.ConfigError, match=r"loss\.margin=1\.6: .*\[0, π/2\)"):
        _validate("sentence_similarity", "smoke", "loss.kind=arcface",
                  f"loss.margin={1.6}")
    # softmax and simpler_a use no margin: any value is ignored, none refused.
    _validate("sentence_similarity", "smoke", "loss.kind=simpler_a", "loss.margin=7")
    assert 1.2 < math.pi / 2 < 1.6


def test_choice_lists_come_from_the_dispatch_tables():
    with pytest.raises(configs.ConfigError) as error:
        _validate("sentence_similarity", "smoke", "loss.kind=amm")
    assert str(tuple(margin_softmax.KINDS)) in str(error.value)
    with pytest.raises(configs.ConfigError) as error:
        _validate("sentence_similarity", "smoke", "model.final_state=first")
    assert str(tuple(sentence_encoder.FINAL_STATES)) in str(error.value)
    with pytest.raises(configs.ConfigError) as error:
        _validate("sentence_similarity", "smoke", "mode=evaluate")
    assert str(tuple(sentence_similarity_train.MODES)) in str(error.value)


def _launch(capsys, *args):
    code = launch.main(list(args))
    return code, capsys.readouterr().err


def test_unknown_loss_kind_is_refused_before_the_data_is_read(tmp_path, capsys):
    workdir = tmp_path / "run"
    code, err = _launch(capsys, "sentence_similarity:smoke", "--workdir", str(workdir),
                        "--config.loss.kind=amm",
                        f"--config.data.path={tmp_path / 'no_such_file.tsv'}")
    assert code == 2 and "Traceback" not in err
    assert "--config.loss.kind='amm': must be one of" in err
    assert "no_such_file" not in err
    assert not workdir.exists()  # validated before the workdir is created


def test_sparse_lm_refuses_negative_steps_before_reading(tmp_path, capsys):
    workdir = tmp_path / "run"
    code, err = _launch(capsys, "sparse_lm:smoke", "--workdir", str(workdir),
                        "--config.trainer.num_steps=-5")
    assert code == 2 and "--config.trainer.num_steps=-5: must be an integer >= 1" in err
    assert not workdir.exists()


def test_sparse_lm_run_itself_refuses_negative_steps(tmp_path):
    from experiments import sparse_lm
    config = sparse_lm.get_config("smoke")
    configs.apply_overrides(config, ["trainer.num_steps=-5"])
    with pytest.raises(configs.ConfigError, match="trainer.num_steps=-5"):
        sparse_lm.run(config, tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing read, nothing written


def test_a_boolean_step_count_is_refused_on_the_command_line(tmp_path, capsys):
    code, err = _launch(capsys, "gan:smoke", "--workdir", str(tmp_path / "run"),
                        "--config.trainer.num_steps=True")
    assert code == 2 and "--config.trainer.num_steps: expected int" in err
