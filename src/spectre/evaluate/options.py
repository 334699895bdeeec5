"""What ``spectre evaluate`` was asked to do (the CLI's flags as one dataclass), shared by the pipeline and
the lip-reading evaluator."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EvaluationOptions:
    reference: str | None = None        #: file, or folder matched by name
    half: str = "full"                     #: half of a side-by-side prediction video
    reference_half: str | None = None   #: half of a reference video (default: other half)
    plots: bool = True
    lipread: bool = False
    transcripts: str | None = None
    video: str | None = None            #: input video(s) for the lip-reading ceiling
    render: str | None = None           #: render video(s) of .npz results, in the input's pixel frame
    g2p: str = "auto"
    assets: str | None = None
    device: str = "auto"
    #: independent judges (``spectre.evaluate.judge``): None = every installed one, [] = none
    judges: list[str] | None = None
