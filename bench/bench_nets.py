"""Images/s of each network, float32 eager vs the inference fast path, measured in one run.

    PYTHONPATH=src python bench/bench_nets.py [--quick] [--batch 32] [--device cpu] [--compile]

Networks: DECA E_flame (ResNet-50, 224²), SPECTRE E_expression (MobileNetV2 + temporal conv, one
sequence of `batch` frames, 224²), emotion net (ResNet-50, 224²), lipreader front-end (Conv3d +
ResNet-18 on 88² mouths, one sequence) and the lipreader conformer encoder (same input).
Variants: fp32 eager (baseline) | fp32 + folded BN + channels_last | bf16/fp16 autocast + folded BN
+ channels_last (when the device has native support) | optional torch.compile of the best one.
Drift = max|fast - fp32 eager| / max|fp32 eager| on the golden inputs with the golden weights
(falls back to random weights and inputs when ../shared/golden is absent).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from spectre.device import Runtime, configure_threads, cpu_supports_bf16
from spectre.nets.checkpoints import deca_from_state_dict, emotion_from_emoca_state_dict, perceptual_from_state_dict
from spectre.nets.deca import DecaEncoder
from spectre.nets.emotion import EmotionNet
from spectre.nets.fast import prepare_for_inference
from spectre.nets.lipreader import Lipreader, LipreaderConfig
from spectre.nets.perceptual import PerceptualEncoder

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(os.environ.get("SPECTRE_SHARED", ROOT.parent / "shared")) / "golden"


def _golden():
    if not (GOLDEN / "golden_weights.py").is_file():
        return None
    sys.path.insert(0, str(GOLDEN))
    import golden_weights as gw  # noqa: E402

    def sd(keys, prefix):
        return {k: torch.from_numpy(np.asarray(gw.det_tensor(prefix + k, tuple(s)))) for k, s in keys.items()}

    return gw, sd


def build_networks():
    """name -> (model, method, golden input or None, speed-input factory(batch))."""
    g = _golden()
    img = lambda b: torch.rand(b, 3, 224, 224)  # noqa: E731
    mouths = lambda b: torch.randn(1, b, 88, 88)  # noqa: E731
    u8 = lambda a: torch.from_numpy(a.astype(np.float32) / np.float32(255))  # noqa: E731
    lip_json = [80, 31, {"adim": 256, "aheads": 4, "eunits": 2048, "elayers": 12, "transformer_input_layer": "conv3d",
                         "transformer_encoder_attn_layer_type": "rel_mha", "rel_pos_type": "latest",
                         "macaron_style": True, "use_cnn_module": True, "cnn_module_kernel": 31, "relu_type": "swish",
                         "dunits": 2048, "dlayers": 6, "char_list": [str(i) for i in range(31)]}]
    if g is None:
        deca, perc, emo = DecaEncoder().eval(), PerceptualEncoder().eval(), EmotionNet().eval()
        lip = Lipreader(LipreaderConfig.from_json_obj(lip_json)).eval()
        gin = {"deca": img(2), "perceptual": img(7), "emotion": img(3), "lip": mouths(9)}
    else:
        gw, sd = g
        keys = lambda n: json.loads((GOLDEN / n).read_text())  # noqa: E731
        deca = deca_from_state_dict(sd(keys("deca_encoder_keys.json")["keys"], "E_flame."))
        perc = perceptual_from_state_dict(sd(keys("spectre_model_keys.json")["E_expression"], "E_expression."))
        emo = emotion_from_emoca_state_dict(sd(keys("emotion_keys.json")["emoca_checkpoint_state_dict"], "emotion."))
        lk = keys("lipreader_keys.json")
        lip = Lipreader(LipreaderConfig.from_json_obj(lk["ASSUMED_model_json"]))
        lip.load_state_dict(sd(lk["keys"], "lipreader."))
        lip.eval()
        gin = {"deca": u8(np.load(GOLDEN / "deca_encoder.npz")["in_images_u8"]),
               "perceptual": u8(np.load(GOLDEN / "spectre_encoder.npz")["in_images_u8"]),
               "emotion": u8(np.load(GOLDEN / "emotion.npz")["in_images_u8"]),
               "lip": torch.from_numpy(np.load(GOLDEN / "lipreader.npz")["in_mouths"])}
    return {
        "DECA E_flame (ResNet-50)": (deca, "forward", gin["deca"], img),
        "E_expression (MobileNetV2)": (perc, "forward", gin["perceptual"], img),
        "emotion (ResNet-50)": (emo, "forward", gin["emotion"], img),
        "lipreader front-end (88²)": (lip, "resnet_features", gin["lip"], mouths),
        "lipreader conformer (88²)": (lip, "encode", gin["lip"], mouths),
    }, g is not None


def _flat(out):
    return torch.cat([o.reshape(-1) for o in out]) if isinstance(out, (tuple, list)) else out.reshape(-1)


def time_call(fn, x, iters: int) -> float:
    fn(x)  # warm-up (oneDNN primitive creation, compile)
    best = float("inf")
    for _ in range(iters):
        t0 = time.perf_counter()
        fn(x)
        best = min(best, time.perf_counter() - t0)
    return best


def run(quick: bool = True, batch: int = 32, iters: int = 3, device: str = "cpu", threads: int | None = None,
        compile: bool = False) -> list[dict]:
    """One row per network: images/s of the fastest fast-path variant vs fp32 eager (same run), with the
    rates of every variant and their drift from fp32 eager."""
    if quick:
        batch, iters = min(batch, 8), 1
    threads = configure_threads(threads) if device == "cpu" else None
    nets, golden = build_networks()
    if quick:
        nets.pop("lipreader conformer (88²)")
    variants = [("fp32 eager", None), ("fp32 fold+CL", Runtime.create(device, "fp32"))]
    low = Runtime.create(device, "auto")
    if low.precision == "fp32" and device == "cpu":
        low = Runtime.create(device, "bf16")  # emulated: measured anyway, to show it does not pay
    variants.append((f"{low.precision} fold+CL", low))
    rows = []
    for name, (model, method, gin, make) in nets.items():
        x = make(batch).to(device)
        eager = model.to(device)

        def base(inp, m=eager, meth=method):
            with torch.inference_mode():
                return getattr(m, meth)(inp)

        rates, drifts = {}, {}
        with torch.inference_mode():
            ref = _flat(getattr(eager, method)(gin.to(device))).float()
        for vname, rt in variants:
            if rt is None:
                fn = base
            else:
                fast = prepare_for_inference(model, rt)
                fn = (lambda inp, f=fast, meth=method: f.call(meth, inp))
                out = _flat(fn(gin)).float().cpu()
                drifts[vname] = float((out - ref.cpu()).abs().max() / ref.abs().max().clamp_min(1e-12))
            rates[vname] = batch / time_call(fn, x, iters)
        if compile:
            fast = prepare_for_inference(model, low, compile=True)
            rates["compiled"] = batch / time_call(
                lambda inp: fast.call(method, inp) if method != "forward" else fast(inp), x, iters)
        best = max((k for k in rates if k != "fp32 eager"), key=rates.get)
        rows.append({"stage": "network", "case": name, "unit": "images/s", "value": rates[best],
                     "variant": best, "baseline": rates["fp32 eager"], "baseline_name": "fp32 eager",
                     "rates": rates, "drift": drifts, "batch": batch, "threads": threads,
                     "weights": "golden" if golden else "random"})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="batch 8, 1 timed run, skip the conformer")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--iters", type=int, default=3, help="timed runs per variant (best is reported)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of the reduced-precision path")
    args = ap.parse_args(argv)
    rows = run(args.quick, args.batch, args.iters, args.device, args.threads, args.compile)
    first = rows[0]
    print(f"# device={args.device} threads={first['threads']} batch={first['batch']} "
          f"native_bf16={cpu_supports_bf16() if args.device == 'cpu' else 'n/a'} "
          f"weights={first['weights']} torch={torch.__version__}")
    try:
        print(f"# load: {os.getloadavg()}")
    except OSError:
        pass
    names = list(first["rates"])
    drift_names = list(first["drift"])
    print(f"{'network':30s} " + " ".join(f"{n:>15s}" for n in names) + f" {'speed-up':>9s} "
          + " ".join(f"{'drift ' + n:>20s}" for n in drift_names))
    for r in rows:
        print(f"{r['case']:30s} " + " ".join(f"{r['rates'][n]:11.1f} i/s" for n in names)
              + f" {r['value'] / r['baseline']:8.2f}x " + " ".join(f"{r['drift'][n]:20.1e}" for n in drift_names),
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
