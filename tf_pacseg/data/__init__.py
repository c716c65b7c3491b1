"""Datasets: TFRecords, VOC folders, conversion, augmentation, pipelines, checks, statistics."""
