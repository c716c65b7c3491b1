"""`--keep_best=miou`: `model_dir/best/` holds the model of the best validation mIoU so far.

After each training-time evaluation that beats the best mIoU so far, the
chief writes `best/model.weights.h5` + `model.json` (with the class names)
and `best/evaluation.json` (the evaluation, as evaluate.py's --output_json
writes it). They are written into `.best.partial` first and swapped in by
renames, so that `best/` is always one complete model with its evaluation;
a full or unwritable disk stops the write with a `files.SaveError` and leaves
the previous `best/` as it was.

The best value lives in `best/evaluation.json`, not in the training
checkpoint: the loop saves each checkpoint before the evaluation that
follows it, so no checkpoint could hold that evaluation's result, while
`best/` always holds the model its value describes. A resumed run reads it
back (`restore`); a fresh run starts with none, and its first evaluation
replaces a `best/` left in `model_dir`.

Example:

```python
best = BestModel(config)
best.restore()  # On a resume.
best.update(model, result, step=1000)  # True if `result` is the best so far.
```
"""

import json
import math
import os
import shutil

from absl import logging

from tf_pacseg import files
from tf_pacseg.inference import report
from tf_pacseg.training import checkpoints, components
from tf_pacseg.weights import saving, sources

BEST_DIR = "best"
EVALUATION_FILE = "evaluation.json"


class BestModel:
    """The best model of a run so far, in `model_dir/best/`.

    Args:
        config: `TrainConfig`, its classes resolved (`classes.resolve_classes`).

    Attributes:
        directory: str. `model_dir/best`.
        miou: float or None. The best validation mIoU so far (None before
            the first evaluation).
    """

    def __init__(self, config):
        self.config = config
        model_dir = config.model_dir
        self.directory = os.path.join(model_dir, BEST_DIR)
        self._partial = os.path.join(model_dir, f".{BEST_DIR}.partial")
        self._previous = os.path.join(model_dir, f".{BEST_DIR}.previous")
        self.miou = None

    def restore(self):
        """Reads back the best mIoU of the run being resumed (None if it wrote no `best/`)."""
        self._finish_swap()
        path = os.path.join(self.directory, EVALUATION_FILE)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                self.miou = float(json.load(f)["miou"])
            logging.info("Best validation mIoU so far: %.4f (%s).", self.miou, self.directory)
        return self.miou

    def update(self, model, result, step):
        """Writes `best/` if `result` beats the best mIoU so far.

        Args:
            model: `PACSegmenter` with the evaluated weights.
            result: dict. Its evaluation (`report.result_from_confusion_matrix`).
            step: int. The global step of the weights.

        Returns:
            bool. Whether `best/` now holds this model.
        """
        miou = result["miou"]
        if not math.isfinite(miou) or (self.miou is not None and miou <= self.miou):
            return False
        shutil.rmtree(self._partial, ignore_errors=True)
        weights_path = os.path.join(self._partial, sources.MODEL_STEM + sources.WEIGHTS_SUFFIX)
        metadata = components.model_metadata(self.config, step)
        what = f"the best model (step {step})"
        with (
            checkpoints.reporting_save_errors(what, self.config.model_dir, model),
            files.removed_on_failure(self._partial),
        ):
            saving.save_model_weights(model, weights_path, **metadata)
            report.write_json(result, os.path.join(self._partial, EVALUATION_FILE))
        self._swap()
        previous, self.miou = self.miou, miou
        logging.info(
            "New best validation mIoU %.4f (before: %s) at step %d: wrote %s.",
            miou,
            "none" if previous is None else f"{previous:.4f}",
            step,
            self.directory,
        )
        return True

    def export(self, engine, export_dir):
        """Exports the model in `best/` through `engine` (`Engine.export`); on the chief only.

        Returns:
            str naming what was exported, or None when nothing was.
        """
        if not os.path.isdir(self.directory):
            logging.warning(
                "--export_from=best: no evaluation wrote %s; no export.", self.directory
            )
            return None
        what = engine.export(export_dir, model=saving.load_model(self.directory))
        return what and f"{what} of {self.directory}"

    def _swap(self):
        """Puts the complete `.best.partial` in the place of `best/`."""
        # A directory cannot be renamed onto a non-empty one: the old one moves
        # aside first. Each rename is atomic; `_finish_swap` completes a swap
        # killed between them.
        shutil.rmtree(self._previous, ignore_errors=True)
        if os.path.exists(self.directory):
            os.replace(self.directory, self._previous)
        os.replace(self._partial, self.directory)
        shutil.rmtree(self._previous, ignore_errors=True)

    def _finish_swap(self):
        """After a kill between the renames of `_swap`, moves the new best into place."""
        if os.path.exists(self.directory) or not os.path.isdir(self._previous):
            return
        # The old best was moved aside only once the new one was complete.
        source = self._partial if os.path.isdir(self._partial) else self._previous
        os.replace(source, self.directory)
