"""YAML config + typed `--set` overrides."""

from __future__ import annotations

import dataclasses

import pytest

from omics import paths
from omics.config import TrainConfig, load_config
from omics.errors import UserError


@pytest.fixture
def yaml_file(write_file):
    return write_file("run.yaml", "finetune: lora\nlora_r: 16\nlearning_rate: 1e-4\nwrap_tags: false\n")


def test_yaml_values_and_defaults(yaml_file):
    config = load_config(yaml_file)
    assert config.finetune == "lora" and config.lora_r == 16 and config.wrap_tags is False
    assert isinstance(config.learning_rate, float) and config.learning_rate == 1e-4  # "1e-4" is a str in YAML
    assert config.max_steps == TrainConfig().max_steps  # untouched keys keep their defaults


def test_overrides_are_typed(yaml_file):
    config = load_config(yaml_file, [
        "learning_rate=3e-5",
        "lora_r=8",
        "wrap_tags=true",
        "train_norms=false",
        "lora_target_modules=[q_proj, v_proj]",
        "fully_trained_modules=[]",
        "epochs=2",
        "min_lr_ratio=0",
        "optimizer=adafactor",
        "system_prompt=Be brief.",
    ])
    assert config.learning_rate == 3e-5 and isinstance(config.learning_rate, float)
    assert config.lora_r == 8 and isinstance(config.lora_r, int)
    assert config.wrap_tags is True and config.train_norms is False
    assert config.lora_target_modules == ["q_proj", "v_proj"] and config.fully_trained_modules == []
    assert config.epochs == 2.0 and isinstance(config.epochs, float)
    assert config.min_lr_ratio == 0.0 and isinstance(config.min_lr_ratio, float)
    assert config.optimizer == "adafactor" and config.system_prompt == "Be brief."


def test_override_beats_yaml_and_last_override_wins(yaml_file):
    assert load_config(yaml_file, ["lora_r=4", "lora_r=2"]).lora_r == 2


def test_float_strings_are_coerced(write_file):
    config = load_config(write_file("c.yaml", "learning_rate: '2e-4'\nmax_steps: '7'\n"))
    assert config.learning_rate == 2e-4 and config.max_steps == 7


def test_unknown_key_lists_valid_keys(yaml_file):
    with pytest.raises(ValueError, match=r"unknown config keys \['lerning_rate'\]") as err:
        load_config(yaml_file, ["lerning_rate=1e-4"])
    message = str(err.value)
    assert message.startswith("--set: ")  # the typo is in the override, not in the YAML file
    for f in dataclasses.fields(TrainConfig):
        assert f"'{f.name}'" in message


def test_unknown_key_in_yaml(write_file):
    with pytest.raises(ValueError, match=r"unknown config keys \['batch_size'\]"):
        load_config(write_file("c.yaml", "batch_size: 8\n"))


def test_override_without_equals(yaml_file):
    with pytest.raises(ValueError, match="key=value"):
        load_config(yaml_file, ["learning_rate"])


@pytest.mark.parametrize("override, match", [
    ("finetune=qlora", r"'finetune' must be one of \('lora', 'full'\), got 'qlora'"),
    ("finetune=LoRA", r"'finetune' must be one of \('lora', 'full'\)"),
    ("on_bad_line=ignore", r"'on_bad_line' must be one of \('skip', 'stop'\), got 'ignore'"),
    ("on_bad_reasoning=drop", r"'on_bad_reasoning' must be one of"),
    ("optimizer=sgd", r"'optimizer' must be one of"),
    ("warmup_ratio=10", r"warmup_ratio is a fraction"),
])
def test_bad_choice_values(yaml_file, override, match):
    with pytest.raises(ValueError, match=match):
        load_config(yaml_file, [override])


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="nope.yaml not found"):
        load_config(tmp_path / "nope.yaml")


def test_non_mapping_yaml(write_file):
    with pytest.raises(ValueError, match="expected a mapping"):
        load_config(write_file("list.yaml", "- a\n- b\n"))


def test_empty_yaml_is_all_defaults(write_file):
    assert load_config(write_file("empty.yaml", "")) == TrainConfig()


def test_shipped_stage1_config_loads():
    path = paths.default_config(1)
    assert path.is_file()
    config = load_config(path)
    assert config.finetune == "lora" and config.lora_r == 128 and config.lora_alpha == 64
    assert config.learning_rate == 1e-4 and isinstance(config.learning_rate, float)
    assert config.max_length == 2048 and config.train_norms is True and config.wrap_tags is False
    assert config.lora_target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                          "down_proj"]
    assert config.loraplus_lr_ratio == 4.0 and config.warmup_ratio == 0.1 and config.epochs == 2.0
    # every field keeps its declared type after loading
    for f in dataclasses.fields(TrainConfig):
        expected = {"int": int, "float": float, "bool": bool, "str": str}.get(f.type)
        if expected is not None:
            assert type(getattr(config, f.name)) is expected, f.name


def test_to_dict_round_trips(yaml_file):
    config = load_config(yaml_file, ["lora_r=4"])
    assert TrainConfig(**config.to_dict()) == config


@pytest.mark.parametrize("prompt", ["Answer: yes or no.", "Be brief #1 rule"])
def test_string_override_is_kept_verbatim(yaml_file, prompt):
    assert load_config(yaml_file, [f"system_prompt={prompt}"]).system_prompt == prompt


@pytest.mark.parametrize("override", ["max_steps=2.7", "lora_r=true", "train_norms=maybe"])
def test_ill_typed_override_is_rejected(yaml_file, override):
    with pytest.raises(ValueError, match=override.split("=")[0]):
        load_config(yaml_file, [override])
