"""K-frame clip dataset over a cache written by ``spectre prepare`` (SPEC §6).

Each sample is one window of K consecutive frames of one clip, cropped exactly like the official
training crop (bbox of the frame's 68 landmarks, scale ~ U(1.4, 1.8) per clip in training, 1.6 for
evaluation, 224x224), with the landmarks in normalised crop coordinates ([-1, 1], third column 1).
Mouth crops are cut later, inside the training step, from these images (they must stay differentiable
on the render side, and cutting both sides the same way keeps them comparable).

Randomness (window start, crop scale) is drawn from a generator seeded by (seed, epoch, clip), not
from a worker's global state: the same run gives the same samples with any number of loader workers,
and a resumed run continues with exactly the samples it would have seen.
"""
from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..faces.crop import FACE_CROP_SCALE, FACE_CROP_SIZE, face_crop_transform, transform_points, warp_crop_fast
from ..io.video import open_video
from ..reconstruct.fit import TrackFit

MANIFEST = "manifest.json"
SPLITS_DIR = "splits"
SPLIT_NAMES = ("train", "val", "test")
MIN_FRAMES = 5  # the temporal conv (k5, p2) needs 5 frames for one valid output (SPEC §9.4)


# ---------------------------------------------------------------------------------------------
# cache layout
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClipInfo:
    """One manifest entry: where a prepared clip lives and what it holds."""

    id: str
    path: str  # folder relative to the cache root
    frames: int
    valid_frames: int
    fps: float
    source: str = ""
    has_crops: bool = True
    has_fit: bool = False


@dataclass
class PreparedCache:
    """Read-only view of a prepared cache: the manifest and the split files."""

    root: Path
    clips: dict[str, ClipInfo]
    meta: dict = field(default_factory=dict)

    @classmethod
    def open(cls, root: str | Path) -> PreparedCache:
        root = Path(root)
        path = root / MANIFEST
        if not path.is_file():
            raise InputError(f"{root} is not a prepared cache (no {MANIFEST}; run `spectre prepare` first)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            clips = {c["id"]: ClipInfo(**c) for c in data["clips"]}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{path} is not a valid manifest ({type(exc).__name__}: {exc})") from None
        return cls(root, clips, {k: v for k, v in data.items() if k != "clips"})

    def split(self, name: str) -> list[str]:
        """Clip ids of a split file (``splits/<name>.txt``); unknown ids are an error."""
        path = self.root / SPLITS_DIR / f"{name}.txt"
        if not path.is_file():
            raise InputError(f"split file not found: {path}")
        ids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        unknown = [i for i in ids if i not in self.clips]
        if unknown:
            raise InputError(f"{path}: {len(unknown)} clip id(s) not in the manifest, e.g. {unknown[0]!r}")
        return ids

    def clip_dir(self, clip_id: str) -> Path:
        return self.root / self.clips[clip_id].path


# ---------------------------------------------------------------------------------------------
# reading one prepared clip
# ---------------------------------------------------------------------------------------------
class ClipReader:
    """Frames, landmarks and fit targets of one prepared clip, read lazily (memory-mapped)."""

    def __init__(self, folder: Path):
        self.folder = folder
        try:
            self.meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
            self.landmarks = np.load(folder / "landmarks.npy", mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read prepared clip {folder}: {exc}") from None
        self._crops = None
        self._offsets = None

    @property
    def num_frames(self) -> int:
        return int(self.landmarks.shape[0])

    def crop_tforms(self) -> np.ndarray:
        if self.meta.get("crop_format") == "none":  # frames come from the video itself
            return np.broadcast_to(np.eye(3), (self.num_frames, 3, 3))
        return np.load(self.folder / "crop_tforms.npy", mmap_mode="r")

    def crops(self, start: int, stop: int) -> np.ndarray:
        """(n, S, S, 3) uint8 RGB loose crops of frames [start, stop) (whole frames without stored crops)."""
        fmt = self.meta.get("crop_format", "raw")
        if fmt == "none":
            return self._video_frames(start, stop)
        if fmt == "raw":
            return np.asarray(np.load(self.folder / "crops.npy", mmap_mode="r")[start:stop])
        import cv2

        if self._offsets is None:
            self._offsets = np.load(self.folder / "crops_offsets.npy")
        blob = np.load(self.folder / "crops_jpg.npy", mmap_mode="r")
        out = []
        for t in range(start, stop):
            buf = np.asarray(blob[self._offsets[t]:self._offsets[t + 1]])
            img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
            if img is None:
                raise InputError(f"{self.folder}: corrupt JPEG crop for frame {t}")
            out.append(img[:, :, ::-1])
        return np.stack(out)

    def _video_frames(self, start: int, stop: int) -> np.ndarray:
        """Decode frames [start, stop) from the source video (slow path: prepare without crops)."""
        out = []
        for i, _, frame in open_video(self.meta["source"], warn_fps=False).iter_frames():
            if i >= stop:
                break
            if i >= start:
                out.append(frame)
        if len(out) != stop - start:
            raise InputError(f"{self.meta['source']}: video has fewer frames than its prepared landmarks")
        return np.stack(out)

    def fit(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Per-frame fit-backend parameters stored by prepare (ICT training targets)."""
        path = self.folder / "fit.npz"
        if not path.is_file():
            raise InputError(f"{self.folder} has no fit results (prepare with --fit for ICT training)")
        with np.load(path, allow_pickle=False) as d:
            return {k: np.asarray(d[k][start:stop], dtype=np.float32) for k in d.files}


# ---------------------------------------------------------------------------------------------
# dataset + sampler
# ---------------------------------------------------------------------------------------------
@dataclass
class ClipDataConfig:
    """Sampling and cropping options (official values as defaults)."""

    clip_length: int = 20  # K (SPEC §6)
    image_size: int = FACE_CROP_SIZE
    scale_min: float = 1.4
    scale_max: float = 1.8
    eval_scale: float = FACE_CROP_SCALE
    batch_size: int = 1
    workers: int = 2
    with_fit: bool = False  # also return fit-backend targets (ICT training)
    augment: bool = True  # random window + crop scale in training; off: first K frames at eval_scale


class ClipDataset(torch.utils.data.Dataset):
    """K-frame windows of prepared clips. Index with ``(epoch, i)`` (what :class:`EpochSampler` yields)
    or a plain ``i`` (epoch 0)."""

    def __init__(self, cache: PreparedCache, clip_ids: Sequence[str], cfg: ClipDataConfig,
                 train: bool = True, seed: int = 0):
        self.cache = cache
        self.cfg = cfg
        self.train = train
        self.seed = seed
        k = cfg.clip_length
        if k < MIN_FRAMES:
            raise InputError(f"clip length K={k} is too short (at least {MIN_FRAMES} frames)")
        keep = []
        for cid in clip_ids:
            info = cache.clips[cid]
            if info.valid_frames == 0 or info.frames < MIN_FRAMES:
                continue  # no face anywhere / too short for one valid temporal-conv output
            if info.frames < k and cfg.batch_size > 1:
                continue  # a batch needs equal lengths; with batch 1 a short clip is used whole (official)
            if cfg.with_fit and not info.has_fit:
                raise InputError(f"clip {cid} has no fit results; prepare with --fit for ICT training")
            keep.append(cid)
        if not keep:
            raise InputError(f"no usable clip in {cache.root} (need >= {MIN_FRAMES} frames with a face)")
        self.clip_ids = keep
        self.skipped = len(clip_ids) - len(keep)

    def __len__(self) -> int:
        return len(self.clip_ids)

    def _rng(self, epoch: int, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch, index, 1 if self.train else 0])

    def window(self, index: int, epoch: int = 0) -> tuple[int, int, float]:
        """(start, stop, crop scale) of sample ``index`` in ``epoch``: random in training,
        the first K frames at scale 1.6 in evaluation."""
        n = self.cache.clips[self.clip_ids[index]].frames
        k = min(self.cfg.clip_length, n)
        if not (self.train and self.cfg.augment):
            return 0, k, self.cfg.eval_scale
        rng = self._rng(epoch, index)
        start = int(rng.integers(0, n - k + 1))
        scale = float(rng.uniform(self.cfg.scale_min, self.cfg.scale_max))
        return start, start + k, scale

    def __getitem__(self, item) -> dict[str, torch.Tensor]:
        epoch, index = item if isinstance(item, tuple) else (0, item)

        cid = self.clip_ids[index]
        reader = ClipReader(self.cache.clip_dir(cid))
        start, stop, scale = self.window(index, epoch)
        size = self.cfg.image_size
        lmk = np.asarray(reader.landmarks[start:stop], dtype=np.float64)  # (K,68,2) original pixels
        tforms = face_crop_transform(lmk, scale, size)  # (K,3,3) original pixels -> crop pixels
        loose = reader.crops(start, stop)  # stored crops (scale 1.8) and their transforms
        loose_t = np.asarray(reader.crop_tforms()[start:stop], dtype=np.float64)
        images = warp_crop_fast(loose, tforms @ np.linalg.inv(loose_t), size)  # (K,S,S,3) float32 [0,1]
        kpts = np.ones((stop - start, 68, 3), dtype=np.float32)
        kpts[..., :2] = transform_points(tforms, lmk) / size * 2.0 - 1.0  # official: /image_size*2-1
        out = {
            "image": torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
            "landmark": torch.from_numpy(kpts),
            "crop_tform": torch.from_numpy(tforms.astype(np.float32)),
            "crop_scale": torch.tensor(scale, dtype=torch.float32),
            "clip_index": torch.tensor(index),
            "start": torch.tensor(start),
        }
        if self.cfg.with_fit:
            out["fit"] = fit_targets(reader.fit(start, stop), tforms, size)
        return out


def fit_targets(fit: dict[str, np.ndarray], tforms: np.ndarray, size: int) -> dict[str, torch.Tensor]:
    """Fit-backend parameters of a window as training targets; the fit's camera (track-normalised
    image coordinates) is re-expressed for this sample's crops, exactly as the fit backend does."""
    params = {k[len("param_"):]: torch.from_numpy(v) for k, v in fit.items() if k.startswith("param_")}
    track = TrackFit(params={}, cam=fit["cam_raw"], center=fit["center"][0].astype(np.float64),
                     scale=float(fit["scale"][0, 0]), landmarks2d=None, landmarks3d=None)
    params["cam"] = torch.from_numpy(track.cam_in_crop(tforms, size))
    return params


class EpochSampler(torch.utils.data.Sampler):
    """Deterministic shuffled order per epoch, split across DDP ranks, that can start mid-epoch.

    Yields ``(epoch, index)`` so the dataset derives each sample's randomness from them. Every rank
    gets the same number of samples (the permutation is truncated to a multiple of world size, as
    ``drop_last`` does for batches).
    """

    def __init__(self, size: int, batch_size: int = 1, shuffle: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        self.size = size
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start_batch = start_batch

    def batches_per_epoch(self) -> int:
        return (self.size // self.world_size) // self.batch_size  # drop_last (official)

    def indices(self, epoch: int) -> list[int]:
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch, 7]).permutation(self.size)
        else:
            order = np.arange(self.size)
        per_rank = self.size // self.world_size
        mine = order[self.rank:per_rank * self.world_size:self.world_size]
        return [int(i) for i in mine[:self.batches_per_epoch() * self.batch_size]]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for i in self.indices(self.epoch)[self.start_batch * self.batch_size:]:
            yield (self.epoch, i)

    def __len__(self) -> int:
        return max(0, (self.batches_per_epoch() - self.start_batch) * self.batch_size)


def collate(samples: list[dict]) -> dict:
    """Stack samples into a batch (B, K, ...); nested dicts (fit targets) are stacked per key."""
    out = {}
    for key, value in samples[0].items():
        if isinstance(value, dict):
            out[key] = {k: torch.stack([s[key][k] for s in samples]) for k in value}
        else:
            out[key] = torch.stack([s[key] for s in samples])
    return out


def make_loader(dataset: ClipDataset, sampler: EpochSampler, workers: int,
                pin_memory: bool = False, persistent: bool = False) -> torch.utils.data.DataLoader:
    """A loader whose workers keep the CPU busy. Each ``iter(loader)`` draws its indices from the
    sampler in this process, so after ``sampler.set_epoch`` the next iteration reads the new epoch /
    start position even with ``persistent`` workers (kept alive across epochs: no start-up per epoch)."""
    return torch.utils.data.DataLoader(
        dataset, batch_size=sampler.batch_size, sampler=sampler, num_workers=workers,
        collate_fn=collate, pin_memory=pin_memory, drop_last=True,
        prefetch_factor=2 if workers > 0 else None, persistent_workers=persistent and workers > 0)
