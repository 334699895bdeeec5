"""A Live Link Face CSV reader written from the app's layout and Unreal's importer (``LiveLinkFaceImporter``):
the first two columns must be ``Timecode`` and ``BlendShapeCount``; the timecode is ``hh:mm:ss:frame.zzz``
with a fractional frame number, read at 60 fps when any frame number exceeds 30, else at 30."""
from __future__ import annotations

import csv

import numpy as np

# the header of a CSV recorded by the Live Link Face app (as the community importers hard-code it)
APP_HEADER = (
    "Timecode,BlendShapeCount,EyeBlinkLeft,EyeLookDownLeft,EyeLookInLeft,EyeLookOutLeft,EyeLookUpLeft,"
    "EyeSquintLeft,EyeWideLeft,EyeBlinkRight,EyeLookDownRight,EyeLookInRight,EyeLookOutRight,EyeLookUpRight,"
    "EyeSquintRight,EyeWideRight,JawForward,JawRight,JawLeft,JawOpen,MouthClose,MouthFunnel,MouthPucker,"
    "MouthRight,MouthLeft,MouthSmileLeft,MouthSmileRight,MouthFrownLeft,MouthFrownRight,MouthDimpleLeft,"
    "MouthDimpleRight,MouthStretchLeft,MouthStretchRight,MouthRollLower,MouthRollUpper,MouthShrugLower,"
    "MouthShrugUpper,MouthPressLeft,MouthPressRight,MouthLowerDownLeft,MouthLowerDownRight,MouthUpperUpLeft,"
    "MouthUpperUpRight,BrowDownLeft,BrowDownRight,BrowInnerUp,BrowOuterUpLeft,BrowOuterUpRight,CheekPuff,"
    "CheekSquintLeft,CheekSquintRight,NoseSneerLeft,NoseSneerRight,TongueOut,HeadYaw,HeadPitch,HeadRoll,"
    "LeftEyeYaw,LeftEyePitch,LeftEyeRoll,RightEyeYaw,RightEyePitch,RightEyeRoll").split(",")


def read_livelink(path):
    """Independent reader: (seconds (T,), {column name: values (T,)})."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    assert header[:2] == ["Timecode", "BlendShapeCount"]
    stamps = []
    for r in body:
        assert len(r) == len(header) and int(r[1]) == len(header) - 2
        h, m, s, f = r[0].split(":")
        assert len(h) == len(m) == len(s) == 2 and "." in f
        stamps.append((int(h), int(m), int(s), float(f)))
    rate = 60 if any(f > 30 for *_, f in stamps) else 30  # Unreal's inference
    times = np.array([h * 3600 + m * 60 + s + f / rate for h, m, s, f in stamps])
    cols = {name: np.array([float(r[i]) for r in body]) for i, name in enumerate(header) if i >= 2}
    return header, times, cols



