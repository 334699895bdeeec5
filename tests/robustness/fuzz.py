"""Seeded, bounded fuzzing of the video reader: mutate a real clip, open and decode it, classify
the outcome. Run as a script (``python fuzz.py SOURCE WORKDIR --seed S --count N``) so
that a crash inside FFmpeg shows up as a failed child process instead of killing the test run; it
prints one JSON line per mutant: ``{"i", "mutation", "outcome", "detail"}``.

outcome: ``ok`` (frames decoded, checked for shape/dtype), ``error`` (a one-line spectre
``InputError``), ``bad`` (anything else: another exception, a multi-line message, wrong frames).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def mutate(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """One random corruption of ``data``: byte flips, a zeroed run, a cut, a duplicated block, or a
    shuffled pair of blocks."""
    kind = rng.choice(["flip", "flip_many", "zero_run", "cut", "duplicate", "swap"])
    buf = bytearray(data)
    n = len(buf)
    if kind in ("flip", "flip_many"):
        count = int(rng.integers(1, 8)) if kind == "flip" else int(rng.integers(20, 400))
        for off in rng.integers(0, n, count):
            buf[int(off)] ^= int(rng.integers(1, 256))
    elif kind == "zero_run":
        a = int(rng.integers(0, n))
        end = min(n, a + int(rng.integers(16, 4096)))
        buf[a:end] = bytes(end - a)
    elif kind == "cut":
        buf = buf[: int(rng.integers(1, n))]
    elif kind == "duplicate":
        a = int(rng.integers(0, n - 1))
        b = min(n, a + int(rng.integers(16, 8192)))
        buf = buf[:b] + buf[a:b] + buf[b:]
    else:
        a, b = sorted(int(x) for x in rng.integers(0, n - 1024, 2))
        block = int(rng.integers(16, 1024))
        buf[a:a + block], buf[b:b + block] = buf[b:b + block], buf[a:a + block]
    return bytes(buf), str(kind)


def probe(path: Path) -> tuple[str, str]:
    from spectre.errors import InputError
    from spectre.io.video import open_video

    try:
        src = open_video(path, warn_fps=False)
        n = 0
        for chunk in src.iter_chunks(16):
            f = chunk.frames
            if f.dtype != np.uint8 or f.ndim != 4 or f.shape[-1] != 3 or len(chunk.indices) != len(f):
                return "bad", f"frames {f.dtype} {f.shape}"
            if not np.all(np.diff(chunk.indices) == 1) or not np.isfinite(chunk.pts_seconds).all():
                return "bad", "frame indices/timestamps broken"
            n += len(f)
        return "ok", f"{n} frames"
    except InputError as exc:
        msg = str(exc)
        if "\n" in msg or str(path) not in msg:
            return "bad", f"unclear error: {msg!r}"
        return "error", msg[len(str(path)):][:160]
    except Exception as exc:  # noqa: BLE001 - exactly what the fuzzer looks for
        return "bad", f"{type(exc).__name__}: {exc}"[:300]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("source", type=Path)
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--count", type=int, default=40)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    data = a.source.read_bytes()
    a.workdir.mkdir(parents=True, exist_ok=True)
    for i in range(a.count):  # a fixed number of mutants: what is covered does not depend on the machine
        mutant, kind = mutate(data, rng)
        path = a.workdir / f"mutant_{i:03d}{a.source.suffix}"
        path.write_bytes(mutant)
        outcome, detail = probe(path)
        print(json.dumps({"i": i, "mutation": kind, "outcome": outcome, "detail": detail}), flush=True)
        path.unlink()


if __name__ == "__main__":
    main()
