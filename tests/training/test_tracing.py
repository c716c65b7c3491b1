"""A TensorFlow run traces the project's functions as written, without autograph.

docs/design.md §6: autograph would rewrite some forty functions (the step,
the loss, the pipelines' parse functions) before the first step, seconds of
every run's start. A fresh process (autograph caches what it converted)
trains, evaluates and exports, recording every function autograph rewrites;
one-op lambdas (the dataset index plumbing) may be.
"""

import json

from helpers import make_records, run_python

_SCRIPT = """
import json, sys
from tensorflow.python.autograph.pyct import transpiler
from training_runs import tiny_config
from tf_pacseg import training

converted = []
transform = transpiler.PyToPy.transform

def recording(self, obj, user_context):
    converted.append(f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', obj)}")
    return transform(self, obj, user_context)

transpiler.PyToPy.transform = recording
training.train(tiny_config(sys.argv[1], sys.argv[2], train_epochs=1, epochs_per_eval=1))
print(json.dumps(converted))
"""


def test_training_evaluation_and_export_convert_none_of_the_project_s_functions(tmp_path):
    records = make_records(str(tmp_path / "data"))
    model_dir = tmp_path / "model"
    result = run_python(_SCRIPT, [records, model_dir], "tensorflow")

    assert (model_dir / "export" / "saved_model.pb").is_file()
    assert (model_dir / "eval").is_dir()
    converted = json.loads(result.stdout.strip().splitlines()[-1])
    assert any(name.endswith("<lambda>") for name in converted)  # The recording works.
    ours = [name for name in converted if name.startswith("tf_pacseg")]
    assert [name for name in ours if not name.endswith("<lambda>")] == []
