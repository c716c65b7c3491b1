"""train.py's absl flags, generated from `TrainConfig`: one flag per field.

Each flag has the field's name and default; its help is the field's entry in
`TrainConfig`'s `Args:` without the type and the default; fields with a few
allowed values (`config.CHOICES`) say which. The original's options are
registered under the main script, so that `--helpfull` lists them first; the
added ones follow under this module, and are key flags of the main script so
that `--help` lists them as well.

Example:

```python
from absl import flags
from tf_pacseg.cli import train_flags as training_flags

training_flags.define_flags()
...
config = training_flags.config_from_flags()  # after absl parsed the command line
```
"""

import dataclasses
import re
import sys
import types

from absl import flags

from tf_pacseg.training.config import CHOICES, NUM_ORIGINAL_OPTIONS, TrainConfig

# "    name: type. help. Defaults to ...." in the `Args:` section.
_ARG = re.compile(r"^ {8}(\w+): [^.]*\.\s+(.*?)\s*Defaults to\s.*\.$", re.S)


def field_help():
    """{field name: help text} from `TrainConfig`'s docstring."""
    args = TrainConfig.__doc__.split("Args:", 1)[1]
    entries = re.split(r"\n(?= {8}\w+: )", args)
    found = {}
    for entry in entries:
        match = _ARG.search(entry.rstrip())
        if match:
            found[match.group(1)] = " ".join(match.group(2).split())
    return found


def _value_type(field):
    """The field's type without `| None`."""
    if isinstance(field.type, types.UnionType):
        (kind,) = [t for t in field.type.__args__ if t is not type(None)]
        return kind
    return field.type


def define_flags(flag_values=flags.FLAGS):
    """Defines one flag per `TrainConfig` field in `flag_values`."""
    help_texts = field_help()
    main_module = sys.argv[0]
    for index, field in enumerate(dataclasses.fields(TrainConfig)):
        help_text = help_texts[field.name]
        module_name = main_module if index < NUM_ORIGINAL_OPTIONS else __name__
        common = dict(flag_values=flag_values, module_name=module_name)
        kind = _value_type(field)
        default = field.default
        choices = CHOICES.get(field.name)
        if choices is not None and kind is not str:
            help_text += f" One of {', '.join(map(str, choices))}."
        if choices is not None and kind is str:
            flags.DEFINE_enum(field.name, default, list(choices), help_text, **common)
        elif kind is bool:
            flags.DEFINE_boolean(field.name, default, help_text, **common)
        elif kind is int:
            flags.DEFINE_integer(field.name, default, help_text, **common)
        elif kind is float:
            flags.DEFINE_float(field.name, default, help_text, **common)
        elif kind is tuple:
            flags.DEFINE_list(field.name, default, help_text, **common)
        else:
            flags.DEFINE_string(field.name, default, help_text, **common)
        if module_name != main_module:  # So that --help lists it too.
            flag_values.register_key_flag_for_module(main_module, flag_values[field.name])


def config_from_flags(flag_values=flags.FLAGS):
    """The `TrainConfig` of the parsed flags.

    Raises:
        ValueError: an invalid setting, named.
    """
    values = {}
    for field in dataclasses.fields(TrainConfig):
        value = flag_values[field.name].value
        if _value_type(field) is tuple and value is not None:
            value = tuple(int(n) for n in value) if value else None
        values[field.name] = value
    return TrainConfig(**values)
