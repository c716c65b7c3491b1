"""Datasets: TFRecords, VOC folders and their conversion, augmentation, pipelines, synthetic."""
