"""The engine contract: both engines fulfil it, and the loop asks for nothing outside it."""

import ast
import inspect

import numpy as np
import pytest
import tensorflow as tf
from training_runs import tiny_config

from tf_pacseg import training
from tf_pacseg.training import engine, jax_engine, loop, tf_engine


@pytest.mark.parametrize("cls", [tf_engine.TFEngine, jax_engine.JaxEngine])
def test_each_engine_implements_every_method_of_the_contract(cls):
    assert issubclass(cls, engine.Engine)
    assert not inspect.isabstract(cls), f"{cls.__name__} lacks {sorted(cls.__abstractmethods__)}"
    assert cls.name in ("tensorflow", "jax")


def _engine_members_used(module):
    """The attributes the module reads of `engine` and `self.engine`."""
    used = set()
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if not isinstance(node, ast.Attribute):
            continue
        value = node.value
        if isinstance(value, ast.Name) and value.id == "engine":
            used.add(node.attr)
        elif isinstance(value, ast.Attribute) and value.attr == "engine":
            used.add(node.attr)
    return used


def test_the_loop_uses_nothing_of_an_engine_outside_the_contract():
    # A bare implementation of the contract: every abstract member, nothing more.
    stub = type("Stub", (engine.Engine,), dict.fromkeys(engine.Engine.__abstractmethods__))
    bare = stub(None, chief=True, multi_worker=False, per_replica_batch=1, write_dir="")
    used = _engine_members_used(loop)
    assert {"train_step", "save", "restore", "latest_checkpoint"} <= used
    assert sorted(name for name in used if not hasattr(bare, name)) == []


def test_the_tensorflow_engine_has_the_contracts_attributes():
    created = training.create_engine(tiny_config("", "model"))
    assert isinstance(created, engine.Engine)
    assert created.name == "tensorflow"
    assert created.chief and not created.multi_worker
    assert created.per_replica_batch == 2 and created.write_dir == "model"
    assert created.model is None
    assert created.build() is created.model is not None


def test_an_engine_finds_only_its_own_checkpoints(tmp_path):
    model_dir = str(tmp_path)
    created = training.create_engine(tiny_config("", model_dir))
    assert created.latest_checkpoint() is None
    np.savez(tmp_path / "ckpt-3.npz", input_position=np.int64(3))
    with pytest.raises(ValueError, match=r"holds a checkpoint of the jax engine \(.*ckpt-3\.npz\)"):
        created.latest_checkpoint()
    prefix = tf.train.Checkpoint(step=tf.Variable(3)).save(str(tmp_path / "ckpt"))
    assert created.latest_checkpoint() == prefix
