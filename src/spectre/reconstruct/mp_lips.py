"""Dense MediaPipe lip points, for the lip term of the ``fit`` backend.

MediaPipe's face mesh has 40 lip-contour points (``FACEMESH_LIPS``: 20 on the outer and 20 on the inner
lip line); the iBUG-68 mouth has 20 points blended from them. The fit can match all 40 when the model
knows where each one lies on its surface (``FaceModel.mediapipe_lip_points()``, in the
order below; ICT's table is ``spectre/models/ict_lips.py``, FLAME's the lip rows of
``spectre/data/flame_mp478.npz``). Models without a table get no dense lip term.
"""
from __future__ import annotations

__all__ = ["MP_LIPS_OUTER", "MP_LIPS_INNER", "MP_LIPS", "LIP_CONTACT_PAIRS"]

#: outer lip line, from the right mouth corner (image left) along the lower lip, back along the upper lip
MP_LIPS_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
#: inner lip line, same order
MP_LIPS_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)
MP_LIPS = MP_LIPS_OUTER + MP_LIPS_INNER
#: (upper, lower) positions in :data:`MP_LIPS` of the inner-lip points that meet when the lips close: the
#: lower inner line runs 1..9 from the right corner, the upper one 19..11 back, so point i faces 20 - i
LIP_CONTACT_PAIRS = tuple((20 + 20 - i, 20 + i) for i in range(1, 10))
