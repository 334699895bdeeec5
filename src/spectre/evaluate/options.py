"""What ``spectre evaluate`` was asked to do (the CLI's flags as one dataclass), shared by the pipeline and
the lip-reading evaluator."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class EvaluationOptions:
    reference: Optional[str] = None        #: file, or folder matched by name
    half: str = "full"                     #: half of a side-by-side prediction video
    reference_half: Optional[str] = None   #: half of a reference video (default: other half)
    plots: bool = True
    lipread: bool = False
    transcripts: Optional[str] = None
    video: Optional[str] = None            #: input video(s) for the lip-reading ceiling
    render: Optional[str] = None           #: render video(s) of .npz results, in the input's pixel frame
    g2p: str = "auto"
    assets: Optional[str] = None
    device: str = "auto"
    #: independent judges (``spectre.evaluate.judge``): None = every installed one, [] = none
    judges: Optional[list[str]] = None
