"""float16 on the JAX engine: dynamic loss scaling as on TensorFlow, and its scale resumes."""

import json
import textwrap

import pytest
from helpers import make_records, run_python

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import keras
    import numpy as np
    from training_runs import tiny_config
    from tf_pacseg.data import records
    from tf_pacseg.training.jax_engine import JaxEngine

    data_dir, model_dir = sys.argv[1:]
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    config = tiny_config(data_dir, model_dir, mixed_precision="mixed_float16")

    def build():
        engine = JaxEngine(config)
        engine.build()
        return engine

    engine = build()
    # Planted before the step takes its state: the first update overflows in float16.
    engine.optimizer.dynamic_scale.assign(2.0 ** 40)
    scale_index = next(
        i for i, v in enumerate(engine.optimizer.variables) if v is engine.optimizer.dynamic_scale
    )
    batches = engine.batches(records.find_record_files(data_dir, "train"))
    images, labels = next(batches)
    steps, losses = [], []
    for index in range(6):
        losses.append(float(engine.train_step(images, labels)["data_loss"]))
        steps.append(int(engine.step))
        if index == 0:  # A scale that fits float16 from now on.
            skipped_scale = float(np.asarray(engine.step_fn.state["optimizer"][scale_index]))
            engine.step_fn.sync_to_model()
            engine.optimizer.dynamic_scale.assign(1024.0)
            engine.step_fn.load_from_model()
    engine.step_fn.sync_to_model()
    scale = float(engine.optimizer.dynamic_scale.value)
    engine.save(engine.step, input_position=6)

    keras.backend.clear_session()  # Layer names as in a new process.
    resumed = build()
    restored = resumed.restore()
    resumed.step_fn.sync_to_model()
    print(json.dumps({
        "compute_dtype": engine.model.compute_dtype,
        "steps": steps,
        "losses": losses,
        "skipped_scale": skipped_scale,
        "scale": scale,
        "restored_scale": float(resumed.optimizer.dynamic_scale.value),
        "restored_step": int(resumed.step),
        "input_position": restored.input_position,
    }))
    """
)


@pytest.mark.slow
def test_float16_on_jax_skips_overflowing_updates_and_resumes_its_loss_scale(tmp_path):
    data_dir = make_records(str(tmp_path))
    process = run_python(SCRIPT, [data_dir, tmp_path / "model"], backend="jax", timeout=900)
    info = json.loads(process.stdout.strip().splitlines()[-1])
    assert info["compute_dtype"] == "float16"
    # The overflowing first update is skipped (the step does not advance), the others apply.
    assert info["steps"] == [0, 1, 2, 3, 4, 5], info
    assert info["skipped_scale"] == 2.0**39  # Halved on the overflow, as on TensorFlow.
    assert all(loss == loss for loss in info["losses"][1:])  # Finite after the skip.
    assert info["losses"][-1] < info["losses"][1], info["losses"]
    assert info["restored_scale"] == info["scale"]
    assert info["restored_step"] == 5
    assert info["input_position"] == 6
