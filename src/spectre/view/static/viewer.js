// spectre view: the video, the animated head (.glb) and the ARKit curves, kept on one clock (the video's).
import {
  WebGLRenderer, Scene, PerspectiveCamera, AnimationMixer, HemisphereLight, DirectionalLight, Color, Box3,
  Vector3, GLTFLoader, OrbitControls,
} from './three-viewer.min.js';

// state the page exposes for tests and debugging
const view = window.spectreView = { ready: false, errors: [], frames: 0, time: 0, heads: [] };
window.addEventListener('error', (e) => view.errors.push(String(e.message)));
window.addEventListener('unhandledrejection', (e) => view.errors.push(String(e.reason)));

const $ = (id) => document.getElementById(id);
const video = $('video');
const status = (text) => { $('status').textContent = text; };
const COLORS = ['#4fc3f7', '#ffb74d', '#81c784', '#e57373', '#ba68c8', '#fff176'];

async function main() {
  const data = await (await fetch('/data.json')).json();
  $('stem').textContent = data.stem;
  const duration = data.times.length ? data.times[data.times.length - 1] : 0;
  data.faces.forEach((f, i) => $('face').add(new Option(`#${f.track_id}`, String(i))));
  $('face').disabled = data.faces.length < 2;

  // --- 3D head
  const canvas = $('three');
  const renderer = new WebGLRenderer({ canvas, antialias: true, preserveDrawingBuffer: true });
  renderer.setPixelRatio(window.devicePixelRatio || 1);
  const scene = new Scene();
  scene.background = new Color(0x202329);
  const gltf = await new GLTFLoader().loadAsync('/head.glb');
  scene.add(gltf.scene);
  const yfov = gltf.cameras && gltf.cameras.length ? gltf.cameras[0].fov : 50;
  const camera = new PerspectiveCamera(yfov, 1, 0.01, 100);  // starts where the video's camera was
  scene.add(camera);
  scene.add(new HemisphereLight(0xffffff, 0x404048, 1.6));
  const key = new DirectionalLight(0xffffff, 1.8);
  key.position.set(0.3, 0.4, 1);
  camera.add(key);
  const mixer = new AnimationMixer(gltf.scene);
  const clip = gltf.animations[0];
  if (clip) mixer.clipAction(clip).play();
  const clipEnd = clip ? Math.max(clip.duration - 1e-4, 0) : 0;
  mixer.setTime(0);
  view.heads = gltf.scene.children.filter((o) => o.name.startsWith('head_'));
  const box = new Box3();
  view.heads.forEach((h) => box.expandByObject(h));
  const centre = box.getCenter(new Vector3());
  camera.lookAt(centre);
  const controls = new OrbitControls(camera, canvas);
  controls.target.copy(centre);
  controls.update();

  function resize() {
    const w = canvas.clientWidth, h = canvas.clientHeight;
    if (canvas.width !== Math.floor(w * renderer.getPixelRatio()) || canvas.height !== Math.floor(h * renderer.getPixelRatio())) {
      renderer.setSize(w, h, false);
      camera.aspect = w / Math.max(h, 1);
      camera.updateProjectionMatrix();
    }
    const c = $('curves');
    const dpr = window.devicePixelRatio || 1;
    if (c.width !== Math.floor(c.clientWidth * dpr)) { c.width = Math.floor(c.clientWidth * dpr); c.height = Math.floor(c.clientHeight * dpr); }
  }

  // --- curves
  const curves = $('curves');
  const ctx = curves.getContext('2d');
  function highlighted(face) {
    if (!face.arkit) return [];
    const n = data.names.length, T = face.arkit.length;
    const spread = data.names.map((_, j) => {
      let lo = Infinity, hi = -Infinity;
      for (let t = 0; t < T; t++) { const v = face.arkit[t][j]; lo = Math.min(lo, v); hi = Math.max(hi, v); }
      return [hi - lo, j];
    });
    return spread.sort((a, b) => b[0] - a[0]).slice(0, Math.min(COLORS.length, n)).map((s) => s[1]);
  }
  let face = data.faces[0];
  let top = highlighted(face);
  function legend() {
    $('legend').innerHTML = face.arkit
      ? top.map((j, k) => `<span style="color:${COLORS[k]}">■ ${data.names[j]}</span>`).join('') + '<span>(grey: the other ARKit curves; click or drag to seek)</span>'
      : '<span>no ARKit weights in this result</span>';
  }
  legend();
  $('face').addEventListener('change', () => { face = data.faces[Number($('face').value)]; top = highlighted(face); legend(); });
  const xOf = (t) => (duration > 0 ? t / duration : 0) * curves.width;
  function drawCurves(t) {
    const W = curves.width, H = curves.height, pad = 6 * (window.devicePixelRatio || 1);
    ctx.clearRect(0, 0, W, H);
    if (face.arkit) {
      const y = (v) => H - pad - v * (H - 2 * pad);
      const line = (j, color, width) => {
        ctx.strokeStyle = color; ctx.lineWidth = width; ctx.beginPath();
        face.arkit.forEach((row, i) => { const x = xOf(data.times[i]); if (i) ctx.lineTo(x, y(row[j])); else ctx.moveTo(x, y(row[j])); });
        ctx.stroke();
      };
      data.names.forEach((_, j) => { if (!top.includes(j)) line(j, 'rgba(160,168,180,0.25)', 1); });
      top.forEach((j, k) => line(j, COLORS[k], 2));
    }
    ctx.strokeStyle = '#ffffff'; ctx.lineWidth = 2;
    ctx.beginPath(); ctx.moveTo(xOf(t), 0); ctx.lineTo(xOf(t), H); ctx.stroke();
  }
  function seekTo(evt) {
    const r = curves.getBoundingClientRect();
    const frac = Math.min(Math.max((evt.clientX - r.left) / r.width, 0), 1);
    video.currentTime = data.time_offset + frac * duration;
  }
  let dragging = false;
  curves.addEventListener('pointerdown', (e) => { dragging = true; curves.setPointerCapture(e.pointerId); seekTo(e); });
  curves.addEventListener('pointermove', (e) => { if (dragging) seekTo(e); });
  curves.addEventListener('pointerup', () => { dragging = false; });

  // --- one clock: the video's
  function frame() {
    resize();
    const t = Math.min(Math.max(video.currentTime - data.time_offset, 0), clipEnd);
    if (clip) mixer.setTime(t);
    view.time = t;
    controls.update();
    renderer.render(scene, camera);
    drawCurves(t);
    view.frames++;
    if (view.frames === 2) { view.ready = true; status(`${data.times.length} frames · ${data.fps.toFixed(2)} fps`); }
    requestAnimationFrame(frame);
  }
  requestAnimationFrame(frame);
}

main().catch((err) => { view.errors.push(String(err && err.stack || err)); status(`error: ${err}`); console.error(err); });
