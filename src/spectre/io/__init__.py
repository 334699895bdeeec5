"""Video input (streaming reader) and output. Heavy imports (PyAV, cv2) happen inside functions."""
from .video import FrameChunk, VideoSource, apply_rotation, open_video

__all__ = ["FrameChunk", "VideoSource", "apply_rotation", "open_video"]
