"""File input/output: videos (streaming reader, writer), result files, mesh exports.
Heavy imports (PyAV, cv2) happen inside functions."""
from .video import FrameChunk, VideoSource, apply_rotation, open_video

__all__ = ["FrameChunk", "VideoSource", "apply_rotation", "open_video"]
