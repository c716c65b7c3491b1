"""The whole job on the embedded synthetic dataset, in a few minutes on a CPU.

    python -m tf_pacseg.cli.demo --work_dir=demo_work --output_dir=demo_output

    KERAS_BACKEND=jax python -m tf_pacseg.cli.demo ...   # the JAX engine

Writes a synthetic VOC-format folder, converts it to TFRecords, trains a
reduced-depth ResNet-50 v1 + PAC + BAL through the same training loop as
train.py (on the Keras backend's engine), evaluates it on the synthetic val
split and predicts colour masks into --output_dir, with metrics.json (the
keys of evaluate.py --output_json).
"""

import os
import shutil
import time

from absl import flags

from tf_pacseg import cli

flags.DEFINE_string("work_dir", "demo_work", "Dataset, records and the training run.")
flags.DEFINE_string("output_dir", "demo_output", "Colour masks and metrics.json.")
flags.DEFINE_integer("num_train", 48, "Synthetic training images.")
flags.DEFINE_integer("num_val", 12, "Synthetic validation images.")
flags.DEFINE_integer("train_epochs", 15, "Training epochs.")
flags.DEFINE_enum(
    "mixed_precision",
    "none",
    ["none", "mixed_float16", "mixed_bfloat16"],
    "Training's compute dtype, as train.py's flag (bfloat16: faster on CPUs with bfloat16 units).",
)
flags.DEFINE_float(
    "min_miou", 0.8, "Exit non-zero when the validation mIoU ends below this (0 to disable)."
)
FLAGS = flags.FLAGS

# A small network and crop so that training takes minutes on 2 cores; the
# code path is train.py's.
_TRAIN_SETTINGS = dict(
    base_architecture="resnet_v1_50",
    head="pac",
    loss="bal",
    output_stride=8,
    units_per_block=(1, 1, 1, 1),
    batch_size=4,
    input_height=65,
    input_width=65,
    initial_learning_rate=0.02,
    # The original's head decay (0.9997) needs thousands of steps for the
    # moving statistics that evaluation uses; the demo runs under 200.
    batch_norm_decay=0.9,
    pre_trained_model="",
    num_gpu=0,
    epochs_per_eval=0,
    log_every_n_steps=10,
    seed=0,
)


def main():
    from tf_pacseg import training
    from tf_pacseg.data import conversion, synthetic
    from tf_pacseg.inference import evaluation, prediction, report
    from tf_pacseg.weights import saving

    started = time.time()
    voc_dir = os.path.join(FLAGS.work_dir, "voc")
    records_dir = os.path.join(FLAGS.work_dir, "records")
    model_dir = os.path.join(FLAGS.work_dir, "model")
    shutil.rmtree(FLAGS.work_dir, ignore_errors=True)

    print("[1/5] writing the synthetic VOC-format dataset")
    synthetic.make_synthetic_voc(voc_dir, num_train=FLAGS.num_train, num_val=FLAGS.num_val)
    print("[2/5] converting it to TFRecords")
    conversion.convert_voc(
        voc_dir,
        records_dir,
        "ImageSets/Segmentation/train.txt",
        "ImageSets/Segmentation/val.txt",
        num_shards=2,
        strict=True,
        num_workers=0,
        verbose=0,
    )
    import keras

    engine = f"the {keras.backend.backend()} engine"
    print(f"[3/5] training with {engine} (KERAS_BACKEND picks it)")
    config = training.TrainConfig(
        data_dir=records_dir,
        model_dir=model_dir,
        train_epochs=FLAGS.train_epochs,
        # The poly schedule decays to 0 over this run, not the original's 30000 steps.
        max_iter=FLAGS.train_epochs * (FLAGS.num_train // _TRAIN_SETTINGS["batch_size"]),
        mixed_precision=FLAGS.mixed_precision,
        **_TRAIN_SETTINGS,
    )
    training.train(config)
    print("[4/5] evaluating on the synthetic val split")
    model = saving.load_model(model_dir)
    result = evaluation.evaluate(model, data_dir=records_dir, batch_size=4, crop_size=(65, 65))
    print(report.format_result(result))
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    report.write_json(result, os.path.join(FLAGS.output_dir, "metrics.json"))
    print(f"[5/5] predicting colour masks into {FLAGS.output_dir}/")
    prediction.predict_folder(
        model, os.path.join(voc_dir, "JPEGImages"), FLAGS.output_dir, output_format="color"
    )
    print(
        f"demo finished in {time.time() - started:.0f} s: trained with {engine}, "
        f"val mIoU {result['miou']:.4f}"
    )
    if result["miou"] < FLAGS.min_miou:
        raise SystemExit(f"demo: val mIoU {result['miou']:.4f} is below {FLAGS.min_miou}.")


def run():
    """Runs the command (console scripts and the shims call this)."""
    cli.run(main)


if __name__ == "__main__":
    run()
