"""train.py's flags are generated from TrainConfig: names, defaults, help, choices, parsing."""

import dataclasses

import pytest
from absl import flags

from tf_pacseg import constants
from tf_pacseg.cli import train_flags as training_flags
from tf_pacseg.training import TrainConfig


def _flag_values(*argv):
    values = flags.FlagValues()
    training_flags.define_flags(values)
    values(["train.py", *argv])
    return values


def test_every_field_is_a_flag_with_its_default_and_help():
    values = _flag_values()
    help_texts = training_flags.field_help()
    for field in dataclasses.fields(TrainConfig):
        assert values[field.name].default == field.default, field.name
        assert help_texts[field.name], field.name
        assert "Defaults to" not in values[field.name].help, field.name
    assert training_flags.config_from_flags(values) == TrainConfig()


def test_choices_come_from_the_constants():
    values = _flag_values()
    assert values["base_architecture"].parser.enum_values == list(constants.BASE_ARCHITECTURES)
    assert values["mixed_precision"].parser.enum_values == [
        "none",
        "mixed_float16",
        "mixed_bfloat16",
    ]
    with pytest.raises(flags.IllegalFlagValueError):
        _flag_values("--loss=dice")


def test_command_line_values_reach_the_config():
    values = _flag_values(
        "--units_per_block=1,2,1,1",
        "--pre_trained_model=",
        "--nofine_tune_batch_norm",
        "--shuffle_buffer=7",
        "--seed=3",
    )
    config = training_flags.config_from_flags(values)
    assert config.units_per_block == (1, 2, 1, 1)
    assert config.pre_trained_model == ""
    assert config.fine_tune_batch_norm is False
    assert (config.shuffle_buffer, config.seed) == (7, 3)


def test_invalid_values_are_named():
    with pytest.raises(ValueError, match="input_depth=1"):
        training_flags.config_from_flags(_flag_values("--input_depth=1"))
    with pytest.raises(ValueError, match="output_stride=32"):
        training_flags.config_from_flags(_flag_values("--output_stride=32"))


def test_help_lists_every_setting_and_helpfull_the_original_ones_first():
    values = _flag_values()
    main_module = values.find_module_defining_flag("batch_size")
    key_flags = {flag.name for flag in values.get_key_flags_for_module(main_module)}
    assert key_flags == {field.name for field in dataclasses.fields(TrainConfig)}
    defined_first = [flag.name for flag in values.get_flags_for_module(main_module)]
    original = [f.name for f in dataclasses.fields(TrainConfig)][: len(defined_first)]
    assert sorted(defined_first) == sorted(original)
