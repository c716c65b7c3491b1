"""--debug's report: the op that produced a NaN or inf, in one message instead of a traceback.

The TensorFlow engine runs under `tf.debugging.enable_check_numerics`, whose
error holds the op type, its inputs and the stack of its creation; the JAX
engine under `jax_debug_nans`, whose `FloatingPointError` names the
primitive. Both become a `NonFiniteLossError` naming the op and the step.
"""

import re

import tensorflow as tf

from tf_pacseg.training.config import NonFiniteLossError

_TF_OP = re.compile(r'Detected Infinity or NaN in output (\d+) of [\w-]+ op "([^"]+)"')
# The checked op's name holds the Keras layer's, e.g. ".../resnet_v1_50.conv1_1/convolution".
_TF_NODE = re.compile(r"\{\{node ([^}]+?)(?:/CheckNumerics\w*)?\}\}")
_TF_PROJECT_FRAME = re.compile(r"(tf_pacseg/[\w/]+\.py) \(L(\d+)\)")
_TF_VALUES = re.compile(r"Tensor had (.+) values")


def _describe_tf(message):
    op = _TF_OP.search(message)
    if op is None:
        return None
    parts = [f"output {op.group(1)} of {op.group(2)} op"]
    node = _TF_NODE.search(message)
    if node:
        parts.append(node.group(1))
    frames = _TF_PROJECT_FRAME.findall(message)
    if frames:
        parts.append("(made at {}:{})".format(*frames[-1]))
    values = _TF_VALUES.search(message)
    return " ".join(parts) + f" had {values.group(1) if values else 'NaN or inf'} values"


def nonfinite_op_error(error, step, model_dir):
    """The `NonFiniteLossError` reporting `error`, if it is --debug's; else None.

    Args:
        error: what the training step raised.
        step: int. The last step completed.
        model_dir: str. Where the last good checkpoint is.
    """
    if isinstance(error, tf.errors.InvalidArgumentError):
        found = _describe_tf(error.message)
    elif isinstance(error, FloatingPointError):  # jax_debug_nans: "invalid value (nan) ...".
        found = str(error).strip() or None
    else:
        found = None
    if found is None:
        return None
    return NonFiniteLossError(
        f"--debug: after step {step}, {found}. Training stopped without saving; the last good "
        f"checkpoint in {model_dir} is kept."
    )
