from setuptools import find_packages, setup

# tf2onnx before 1.17 pins protobuf 3.20, which TensorFlow 2.21 cannot use.
ONNX = ["tf2onnx>=1.17,<2", "onnx>=1.17,<2", "onnxruntime>=1.20,<2"]
LITERT = ["ai-edge-litert>=2.0,<3"]
OPENVINO = ["openvino>=2025.1,<2027"]

setup(
    name="tf_pacseg",
    version="0.1.0",
    description=(
        "Pyramid Atrous Convolution and Boundary-aware Loss for semantic "
        "segmentation, in TensorFlow 2 / Keras 3"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["tf_pacseg", "tf_pacseg.*"]),
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.10,<4",
        "numpy>=1.26,<3",
        "opencv-python-headless>=4.9,<6",
        "pillow>=10,<14",
        "absl-py>=2.1,<3",
        # TensorFlow's and JAX's bfloat16: 0.7.0 takes 0.6 s of CPU to import
        # (it adds its NumPy loops one by one), and every process that imports
        # TensorFlow pays it; 0.6.0 takes 5 ms.
        "ml_dtypes>=0.5.1,<0.7",
    ],
    extras_require={
        # The export formats' converters and runtimes (checkpoints/export.py).
        "onnx": ONNX,
        "litert": LITERT,
        "openvino": OPENVINO,
        "test": [
            # pytest 9.2 computes node ids anew, which undoes pytest-xdist 3.8's
            # `xdist_group` (the tests sharing a costly fixture then run it twice).
            "pytest>=8,<9.2",
            "pytest-xdist>=3.5",
            "jax[cpu]>=0.4.30",
            "tf-slim>=1.1",
            "ruff>=0.6",
            *ONNX,
            *LITERT,
            *OPENVINO,
        ],
        # Viewing the training logs only; training writes them without it.
        "tensorboard": ["tensorboard>=2.20"],
    },
    entry_points={
        "console_scripts": [
            "pacseg-train=tf_pacseg.cli.train:run",
            "pacseg-evaluate=tf_pacseg.cli.evaluate:run",
            "pacseg-predict=tf_pacseg.cli.predict:run",
            "pacseg-convert-voc=tf_pacseg.cli.convert_voc:run",
            "pacseg-convert-tf1=tf_pacseg.cli.convert_tf1:run",
            "pacseg-export=tf_pacseg.cli.export:run",
            "pacseg-check-records=tf_pacseg.cli.check_records:run",
            "pacseg-dataset-stats=tf_pacseg.cli.dataset_stats:run",
        ]
    },
)
