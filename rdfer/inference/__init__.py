"""Inference on real videos (face detection, prediction) and export."""

from .export import export_model
from .predict import UnreadableVideo, VideoPrediction, predict_video, predict_videos, read_video, scan_video
from .tta import TestTimeAugmentation, with_tta

__all__ = ["predict_video", "predict_videos", "VideoPrediction", "read_video", "UnreadableVideo", "export_model", "scan_video",
           "TestTimeAugmentation", "with_tta"]
