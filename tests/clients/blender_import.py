"""Run inside Blender: ``blender -b --factory-startup --python blender_import.py -- FILE.glb OUT.json``.

Imports a GLB written by spectre with Blender's own glTF importer, at the scene frame rate stored in the
file (``asset.extras.spectre.fps``), and writes what an animator would see as JSON: per mesh object its
shape-key names, keyframe counts and frame range of the shape-key and transform animation, and the
object's world transform sampled over the animation.
"""
import json
import struct
import sys
from fractions import Fraction

import numpy

numpy.bool = bool  # Debian's numpy dropped the alias that Blender 3.4's glTF importer still uses

import bpy  # noqa: E402

args = sys.argv[sys.argv.index("--") + 1:]
path, out = args[0], args[1]
with open(path, "rb") as fh:
    data = fh.read()
n_json = struct.unpack_from("<I", data, 12)[0]
meta = json.loads(data[20:20 + n_json])["asset"].get("extras", {}).get("spectre", {})
fps = Fraction(float(meta.get("fps", 24.0))).limit_denominator(1001)
scene = bpy.context.scene
scene.render.fps, scene.render.fps_base = fps.numerator, fps.numerator / float(fps) if fps else 1.0

bpy.ops.import_scene.gltf(filepath=path)


def keyframes(action):
    if action is None:
        return {"curves": 0, "counts": [], "first": None, "last": None}
    counts = [len(fc.keyframe_points) for fc in action.fcurves]
    frames = [k.co[0] for fc in action.fcurves for k in fc.keyframe_points]
    return {"curves": len(action.fcurves), "counts": sorted(set(counts)),
            "first": min(frames) if frames else None, "last": max(frames) if frames else None}


report = {"blender": bpy.app.version_string, "scene_fps": scene.render.fps / scene.render.fps_base,
          "meta": meta, "objects": []}
for obj in bpy.data.objects:
    entry = {"name": obj.name, "type": obj.type}
    if obj.type == "MESH":
        keys = obj.data.shape_keys
        entry["vertices"] = len(obj.data.vertices)
        entry["shape_keys"] = [k.name for k in keys.key_blocks[1:]] if keys else []
        colours = {}
        for attr in getattr(obj.data, "color_attributes", []):  # glTF COLOR_0 (Blender 3.2+)
            rgba = numpy.zeros(len(attr.data) * 4)
            attr.data.foreach_get("color", rgba)
            rgba = rgba.reshape(-1, 4)
            colours[attr.name] = {"count": len(rgba), "red_minus_green_max": float((rgba[:, 0] - rgba[:, 1]).max()),
                                  "white_share": float((rgba[:, :3] > 0.99).all(1).mean())}
        entry["colour_attributes"] = colours
        sk_action = keys.animation_data.action if keys and keys.animation_data else None
        entry["shape_key_animation"] = keyframes(sk_action)
        tr_action = obj.animation_data.action if obj.animation_data else None
        entry["transform_animation"] = keyframes(tr_action)
        if tr_action is not None:
            a, b = tr_action.frame_range
            samples = []
            for f in numpy.linspace(a, b, 9):
                scene.frame_set(int(round(f)))
                m = obj.matrix_world
                samples.append({"frame": int(round(f)), "location": list(m.to_translation()),
                                "euler": list(m.to_euler())})
            entry["world_samples"] = samples
    report["objects"].append(entry)
with open(out, "w") as fh:
    json.dump(report, fh, indent=1)
