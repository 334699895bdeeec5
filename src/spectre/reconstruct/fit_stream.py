"""The fit of one face track, solved window by window while the track is still being tracked.

:func:`~.fit.fit_track` needs the whole track before it starts: its identity comes from frames spread
over the track. :class:`StreamFit` schedules the same solver (:mod:`.fit`'s objective and Adam runs)
so that it can start early: the identity (and the normalisation of the image coordinates) comes from
the first ``span`` frames, then every window of ``window`` frames is solved as soon as its frames have
arrived, warm-started from and anchored to the ``overlap`` frames solved before it. Pushing all frames
at once gives the same numbers as pushing them chunk by chunk (the schedule depends only on the frame
count), which is what the overlapped pipeline relies on.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..models.base import FaceModel
from .evaluator import PointEvaluator
from .fit import FitConfig, TrackFit, _fix_identity, _normalise, _prepare, _result, _rigid_init, _run
from .objective import make_objective
from .rows import Rows

__all__ = ["FitPiece", "FitRows", "StreamFit", "assemble", "fit_rows"]


@dataclass
class FitPiece:
    """Final results for track rows ``start:stop`` (a window without its anchor frames)."""

    start: int
    stop: int
    fit: TrackFit  # arrays of ``stop - start`` rows


class StreamFit:
    """``push`` tracked frames, get back the :class:`FitPiece` s that became final; ``finish`` at the end.

    Scheduling (docs/reconstruct.md): identity from ``cfg.identity_frames`` valid frames spread over the
    first ``span`` frames; windows of ``window`` frames with ``cfg.overlap`` anchor frames."""

    def __init__(self, model: FaceModel, cfg: FitConfig | None = None, evaluator: PointEvaluator | None = None,
                 span: int = 128, window: int = 128):
        self.model, self.cfg = model, cfg or FitConfig()
        self.ev = evaluator or PointEvaluator(model)
        self.span, self.window = max(int(span), 1), max(int(window), 4)
        self.overlap = max(min(self.cfg.overlap, self.window // 2), 0)
        # landmarks and points are forgotten once no window reads them again (the next window's anchor rows
        # on are kept); the valid flags are all kept: the video reads them with each solved piece
        self._lm = Rows((68, 2), np.float64)
        self._valid = Rows((), bool)
        self._p478: Rows | None = None
        self.done = 0            # rows [0, done) are final
        self.norm: tuple[np.ndarray, float] | None = None
        self.identity: np.ndarray | None = None
        self.objective = None
        self._anchor = None      # (coef, rot, cam) solver values of the last ``overlap`` final rows
        self.final_loss = float("nan")

    @property
    def received(self) -> int:
        return len(self._lm)

    def push(self, landmarks: np.ndarray, valid: np.ndarray, points478: np.ndarray | None = None) -> list[FitPiece]:
        """Append frames: ``landmarks`` (n, 68, 2) input px (anything where not ``valid``), ``valid`` (n,),
        ``points478`` (n, 478, 2|3) or None. Returns the pieces solved by this push (maybe none)."""
        valid = np.asarray(valid, bool)
        self._lm.append(np.where(valid[:, None, None], np.nan_to_num(np.asarray(landmarks, np.float64)), 0.0))
        self._valid.append(valid)
        if points478 is not None:
            p = np.asarray(points478, np.float64)
            if self._p478 is None:
                self._p478 = Rows(p.shape[1:], np.float64)
                self._p478.append(np.full((self.received - len(p), *p.shape[1:]), np.nan))
            self._p478.append(p)
        return self._solve(final=False)

    def finish(self) -> list[FitPiece]:
        """Solve whatever is left (a shorter last window)."""
        return self._solve(final=True)

    # -- scheduling
    def _solve(self, final: bool) -> list[FitPiece]:
        pieces: list[FitPiece] = []
        T = self.received
        if self.identity is None:
            if not self._valid[:].any() or (T < self.span and not final):
                if final and T:
                    raise ValueError("no valid frame to fit")
                return pieces
            self._estimate_identity()
        while self.done < T:
            stop = self.done + self.window
            if stop > T and not final:
                break
            pieces.append(self._window(self.done, min(stop, T)))
        return pieces

    def _estimate_identity(self) -> None:
        """Stage A of the fit on valid frames spread over the first ``span`` frames (or all received)."""
        cfg, ev = self.cfg, self.ev
        n = min(self.received, max(self.span, 1))
        lm, valid = self._lm[:n], self._valid[:n]
        self.norm = _normalise(lm, valid)
        vi = np.flatnonzero(valid)
        sel = vi[np.linspace(0, len(vi) - 1, min(cfg.identity_frames, len(vi))).round().astype(int)]
        prob = self._problem(sel, identity=None)
        self.objective = make_objective(self.model, ev, cfg, prob.id_mask)
        rot0, cam0 = _rigid_init(ev, prob)
        dt = prob.target.dtype
        coef, _, _, _ = _run(self.objective, prob, cfg.lr, np.arange(len(sel)), prob.defaults.repeat(len(sel), 1),
                             torch.as_tensor(rot0, dtype=dt), torch.as_tensor(cam0, dtype=dt),
                             cfg.identity_iterations, fix_identity=False, smooth=False)
        id_vec = coef[0, prob.id_mask]
        self.identity = id_vec.cpu().numpy()
        self._base = prob.defaults.clone()
        self._base[prob.id_mask] = id_vec
        _fix_identity(self.objective, ev, prob.id_mask, id_vec, self._base)

    def _problem(self, rows: np.ndarray, identity):
        p478 = self._p478[rows] if self._p478 is not None else None
        return _prepare(self.model, self.ev, self.cfg, self._lm[rows], self._valid[rows], p478, identity,
                        norm=self.norm)

    def _window(self, start: int, stop: int) -> FitPiece:
        """Stage B on rows [start - overlap, stop), the first rows anchored to their earlier solution."""
        cfg = self.cfg
        a = max(start - self.overlap, 0) if self._anchor is not None else start
        anchor = start - a
        rows = np.arange(a, stop)
        valid = self._valid[rows]
        if not valid.any():
            # no detection in the window: hold the last solution (or the neutral face); nothing is drawn
            coef, rot, cam = self._hold(len(rows))
            prob = None
        else:
            prob = self._problem(rows, self.identity)
            rot0, cam0 = _rigid_init(self.ev, prob)
            dt = prob.target.dtype
            rot = torch.as_tensor(rot0, dtype=dt)
            cam = torch.as_tensor(cam0, dtype=dt)
            coef = self._base.repeat(len(rows), 1)
            if anchor:
                c_a, r_a, k_a = self._anchor
                coef[:anchor], rot[:anchor], cam[:anchor] = c_a[-anchor:], r_a[-anchor:], k_a[-anchor:]
                coef[anchor:] = c_a[-1]  # warm start from the end of the previous window
            coef, rot, cam, self.final_loss = _run(self.objective, prob, cfg.lr, np.arange(len(rows)), coef, rot,
                                                   cam, cfg.iterations, fix_identity=True, smooth=True, anchor=anchor)
        keep = max(self.overlap, 1)
        self._anchor = (coef[-keep:].clone(), rot[-keep:].clone(), cam[-keep:].clone())
        if prob is None:
            prob = self._empty_problem(rows)
        fit = _result(self.model, self.ev, self.objective.ev, prob, coef, rot, cam, self.final_loss)
        self.done = stop
        for rows in (self._lm, self._p478):  # the next window reads from its anchor rows on
            if rows is not None:
                rows.forget(stop - self.overlap)
        return FitPiece(start, stop, fit_rows(fit, slice(anchor, None)))

    def _hold(self, n: int):
        if self._anchor is not None:
            c, r, k = self._anchor
            return c[-1:].repeat(n, 1), r[-1:].repeat(n, 1), k[-1:].repeat(n, 1)
        return self._base.repeat(n, 1), torch.zeros(n, 3), torch.zeros(n, 3)

    def _empty_problem(self, rows: np.ndarray):
        """A problem for rows without any detection (only its layout and normalisation are used)."""
        lm = self._lm[rows].copy()
        valid = np.ones(len(rows), bool)
        prob = _prepare(self.model, self.ev, self.cfg, lm, valid, None, self.identity, norm=self.norm)
        prob.valid = np.zeros(len(rows), bool)
        return prob


def fit_rows(fit: TrackFit, sl: slice) -> TrackFit:
    """Rows ``sl`` of a :class:`TrackFit`."""
    return TrackFit(params={k: v[sl] for k, v in fit.params.items()}, cam=fit.cam[sl], center=fit.center,
                    scale=fit.scale, landmarks2d=fit.landmarks2d[sl], landmarks3d=fit.landmarks3d[sl],
                    final_loss=fit.final_loss, evaluator=fit.evaluator,
                    lips2d=None if fit.lips2d is None else fit.lips2d[sl])


class FitRows:
    """A track's fit gathered piece by piece, in order, into per-frame arrays (:class:`~.rows.Rows`): the
    pieces can go as soon as they are added, and the whole track's fit is not a second copy of them."""

    def __init__(self, expect: int = 0):
        """``expect``: the frames expected (the video's announced length)."""
        self.expect = expect
        self.rows: dict[str, Rows] = {}
        self.last: TrackFit | None = None

    def __len__(self) -> int:
        return len(self.rows["cam"]) if self.rows else 0

    def add(self, piece: FitPiece) -> None:
        if piece.start != len(self):
            raise ValueError(f"fit piece of rows {piece.start}:{piece.stop} after {len(self)} rows")
        f = piece.fit
        arrays = {"cam": f.cam, "landmarks2d": f.landmarks2d, "landmarks3d": f.landmarks3d,
                  **{f"param_{k}": v for k, v in f.params.items()}}
        if f.lips2d is not None:
            arrays["lips2d"] = f.lips2d
        if not self.rows:
            self.rows = {k: Rows(v.shape[1:], v.dtype, self.expect) for k, v in arrays.items()}
        for k, v in arrays.items():
            self.rows[k].append(v)
        self.last = f

    def fit(self) -> TrackFit:
        """The whole track's :class:`TrackFit` (views of the gathered rows)."""
        if self.last is None:
            raise ValueError("no fit piece was added")
        last, a = self.last, {k: r.array() for k, r in self.rows.items()}
        return TrackFit(params={k: a[f"param_{k}"] for k in last.params}, cam=a["cam"], center=last.center,
                        scale=last.scale, landmarks2d=a["landmarks2d"], landmarks3d=a["landmarks3d"],
                        final_loss=last.final_loss, evaluator=last.evaluator, lips2d=a.get("lips2d"))


def assemble(pieces: list[FitPiece]) -> TrackFit:
    """One :class:`TrackFit` for the whole track from its pieces."""
    rows = FitRows(sum(p.stop - p.start for p in pieces))
    for p in sorted(pieces, key=lambda p: p.start):
        rows.add(p)
    return rows.fit()
