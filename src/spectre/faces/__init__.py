"""Video frames -> face tracks (MediaPipe 478-point meshes + iBUG-68), and the official crops.

Importing this package is cheap; MediaPipe loads when a tracker first runs.
"""
from .crop import (
                   cut_mouth,
                   face_crop_transform,
                   interpolate_landmarks,
                   mouth_transform,
                   transform_points,
                   warp_crop,
                   warp_crop_fast,
)
from .landmarks import IBUG68_FROM_MP478, OneEuroConfig, OneEuroFilter, landmark_jitter, mp478_to_ibug68
from .track import FaceTracker, TrackerConfig, track_video
from .tracks import FaceChunk, FaceTrack, FaceTracks, select_faces
from .tracks_file import load_tracks, save_tracks

__all__ = [
    "FaceChunk", "FaceTrack", "FaceTracker", "FaceTracks", "IBUG68_FROM_MP478", "OneEuroConfig", "OneEuroFilter",
    "TrackerConfig", "cut_mouth", "load_tracks", "save_tracks", "face_crop_transform", "interpolate_landmarks", "landmark_jitter",
    "mouth_transform", "mp478_to_ibug68", "select_faces", "track_video", "transform_points", "warp_crop",
    "warp_crop_fast",
]
