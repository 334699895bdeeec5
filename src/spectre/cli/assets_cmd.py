"""`spectre assets`: list, add and convert the files spectre uses."""
from __future__ import annotations

import argparse

from ..assets import AssetStore

HELP = "list, verify and install assets (face models, checkpoints)"
DESCRIPTION = """Manage assets. Lookup order: --assets DIR, $SPECTRE_HOME, the user data folder.

  spectre assets list                      what is found or missing, with licence and source
  spectre assets add NAME FILE|URL         verify a file (or a URL you give) and install it
  spectre assets convert-ict DIR           build the full ICT model npz from an ICT-FaceKit download
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--assets", metavar="DIR", help="asset folder searched first")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("list", help="show every asset: found/missing, path, size, licence, where to get it")
    a = sub.add_parser("add", help="verify and install an asset")
    a.add_argument("name", help="asset name (see `spectre assets list`)")
    a.add_argument("file", help="file to install, or an http(s) URL to fetch it from")
    a.add_argument("--overwrite", action="store_true", help="replace an installed copy")
    c = sub.add_parser("convert-ict", help="convert an ICT-FaceKit FaceXModel folder into one npz")
    c.add_argument("folder", help="the FaceXModel folder of the ICT-FaceKit download")
    c.add_argument("-o", "--output", help="output npz (default: install as asset 'ict')")
    c.add_argument("--overwrite", action="store_true", help="replace an existing output")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def run(args: argparse.Namespace) -> int:

    store = AssetStore(args.assets)
    if args.action == "list":
        print("search order: " + " > ".join(f"{src} ({p})" for src, p in store.search_dirs()) + " > bundled")
        for st in store.status():
            state = f"found ({st.source})" if st.found else "MISSING"
            print(f"{st.spec.name:<18} {state:<22} {_size(st.size) if st.found else '-':>9}  {st.spec.description}")
            print(f"{'':<18} path: {st.path or (store.assets_dir or store.search_dirs()[-1][1]) / st.spec.install_path}")
            print(f"{'':<18} licence: {st.spec.licence}; obtain: {st.spec.obtain}; used by: {st.spec.used_by}")
        return 0
    if args.action == "add":
        from ..nets.face_encoder import verify_encoder_file

        # '<model>-encoder' checkpoints are also rebuilt and loaded strictly (readable key report)
        deep = None
        if args.name.endswith("-encoder"):
            model = args.name[:-len("-encoder")]
            deep = lambda path: verify_encoder_file(path, model)  # noqa: E731
        target = store.add(args.name, args.file, overwrite=args.overwrite, deep_check=deep)
        print(f"installed {args.name} -> {target}")
        return 0
    if args.action == "convert-ict":
        from ..models.ict_convert import convert_ict_folder

        out = convert_ict_folder(args.folder, args.output, store=store, overwrite=args.overwrite)
        print(f"wrote {out}")
        return 0
    return 2
