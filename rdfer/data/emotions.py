"""The class order used everywhere in rdfer (DFEW's label order, 1..7 -> 0..6)."""

EMOTIONS = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")
