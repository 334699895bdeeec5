#!/usr/bin/env bash
# Rebuild src/spectre/view/static/three-viewer.min.js, the three.js bundle `spectre view` loads (offline),
# from the npm registry: three (MIT) + its GLTFLoader and OrbitControls addons, bundled and minified by
# esbuild into one ES module that exports only what viewer.js imports. Run from the repository root;
# needs node/npm. Nothing is installed into the repository (a temporary folder is used).
set -euo pipefail
THREE_VERSION="${THREE_VERSION:-0.187.0}"
ESBUILD_VERSION="${ESBUILD_VERSION:-0.28.2}"
OUT="src/spectre/view/static"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
(
  cd "$WORK"
  npm init -y >/dev/null
  npm install --no-audit --no-fund "three@${THREE_VERSION}" "esbuild@${ESBUILD_VERSION}" >/dev/null
  cat > entry.js <<'JS'
export { WebGLRenderer, Scene, PerspectiveCamera, AnimationMixer, AmbientLight, DirectionalLight, HemisphereLight, Color, Vector3, Box3, GridHelper, AxesHelper, LoopRepeat, Clock } from 'three';
export { GLTFLoader } from 'three/addons/loaders/GLTFLoader.js';
export { OrbitControls } from 'three/addons/controls/OrbitControls.js';
JS
  npx esbuild entry.js --bundle --minify --format=esm --legal-comments=none --outfile=three-viewer.min.js
)
cp "$WORK/three-viewer.min.js" "$OUT/three-viewer.min.js"
cp "$WORK/node_modules/three/LICENSE" "$OUT/THREE_LICENSE.txt"
echo "three@${THREE_VERSION} -> $OUT/three-viewer.min.js ($(wc -c < "$OUT/three-viewer.min.js") bytes)"
