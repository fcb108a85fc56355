"""Inference on real videos (face detection, prediction) and export."""

from .export import export_model
from .predict import VideoPrediction, predict_video, read_video

__all__ = ["predict_video", "VideoPrediction", "read_video", "export_model"]
