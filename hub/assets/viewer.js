// Ferry viewer: the series of a study as images the hub renders (WADO-RS /rendered, with the
// session or share cookie) — no DICOM parsing in the browser. Scroll through a series (buttons,
// slider, wheel, arrow keys, or dragging in "scroll" mode), window/level by preset or by dragging,
// zoom and pan (buttons, wheel with Ctrl, pinch), multi-frame playback. Works with touch.

const root = document.getElementById('viewer');
const study = root.dataset.study;
const img = document.getElementById('frame');
const stage = document.getElementById('stage');
const slider = document.getElementById('slider');
const position = document.getElementById('position');
const $ = (id) => document.getElementById(id);
let images = []; // one entry per frame: { series, sop, frame, frames }
let index = 0;
let windowing = null; // [center, width] or null for the image's own
let zoom = 1;
let pan = [0, 0];
let mode = 'scroll';
let playing = null;

const value = (obj, tag) => (obj[tag] && obj[tag].Value ? obj[tag].Value[0] : undefined);

function url(im) {
  const base = `/dicomweb/studies/${study}/series/${im.series}/instances/${im.sop}`;
  const path = im.frames > 1 ? `${base}/frames/${im.frame}/rendered` : `${base}/rendered`;
  return windowing ? `${path}?window=${Math.round(windowing[0])},${Math.round(windowing[1])},linear` : path;
}

function transform() {
  img.style.transform = `translate(${pan[0]}px, ${pan[1]}px) scale(${zoom})`;
  $('zoom-level').textContent = `${Math.round(zoom * 100)} %`;
}

function show(i) {
  if (!images.length) return;
  index = Math.max(0, Math.min(images.length - 1, i));
  const im = images[index];
  img.src = url(im);
  img.dataset.sop = im.sop;
  img.dataset.frame = String(im.frame);
  slider.value = String(index + 1);
  position.textContent = `${index + 1} / ${images.length}`;
  // Warm the cache for the next image.
  if (images[index + 1]) new Image().src = url(images[index + 1]);
}

async function open(series, button) {
  stop();
  for (const b of root.querySelectorAll('button.series')) b.setAttribute('aria-pressed', String(b === button));
  const r = await fetch(`/dicomweb/studies/${study}/series/${series}/instances?includefield=00200013&includefield=00280008`, {
    headers: { accept: 'application/dicom+json' },
    credentials: 'same-origin',
  });
  const list = r.status === 200 ? await r.json() : [];
  const instances = list
    .map((o) => ({ series, sop: value(o, '00080018'), n: Number(value(o, '00200013') ?? 0), frames: Number(value(o, '00280008') ?? 1) || 1 }))
    .sort((a, b) => a.n - b.n || (a.sop < b.sop ? -1 : 1));
  images = instances.flatMap((im) => Array.from({ length: im.frames }, (_, f) => ({ ...im, frame: f + 1 })));
  $('play').hidden = !instances.some((im) => im.frames > 1);
  slider.max = String(Math.max(1, images.length));
  show(0);
}

function stop() {
  if (playing) clearInterval(playing);
  playing = null;
  $('play').setAttribute('aria-pressed', 'false');
}

function play() {
  if (playing) return stop();
  $('play').setAttribute('aria-pressed', 'true');
  playing = setInterval(() => show(index + 1 < images.length ? index + 1 : 0), 100);
}

function setMode(m) {
  mode = m;
  for (const b of root.querySelectorAll('[data-mode]')) b.setAttribute('aria-pressed', String(b.dataset.mode === m));
}

function setZoom(z, about) {
  const next = Math.max(0.25, Math.min(8, z));
  if (about) {
    pan = [about[0] - (about[0] - pan[0]) * (next / zoom), about[1] - (about[1] - pan[1]) * (next / zoom)];
  }
  zoom = next;
  transform();
}

let wlTimer = null;
function setWindow(c, w) {
  windowing = [c, Math.max(1, w)];
  $('wl').textContent = `C ${Math.round(windowing[0])} / W ${Math.round(windowing[1])}`;
  clearTimeout(wlTimer);
  // Re-rendered on the hub; not on every pointer move.
  wlTimer = setTimeout(() => show(index), 120);
}

// Pointer gestures: one pointer acts by mode, two pointers pinch-zoom.
const pointers = new Map();
let last = null;
let pinch = null;
let scrollCarry = 0;
stage.addEventListener('pointerdown', (e) => {
  stage.setPointerCapture(e.pointerId);
  pointers.set(e.pointerId, [e.clientX, e.clientY]);
  last = [e.clientX, e.clientY];
  if (pointers.size === 2) {
    const [a, b] = [...pointers.values()];
    pinch = { d: Math.hypot(a[0] - b[0], a[1] - b[1]), zoom };
  }
});
stage.addEventListener('pointermove', (e) => {
  if (!pointers.has(e.pointerId)) return;
  pointers.set(e.pointerId, [e.clientX, e.clientY]);
  if (pointers.size === 2 && pinch) {
    const [a, b] = [...pointers.values()];
    setZoom(pinch.zoom * (Math.hypot(a[0] - b[0], a[1] - b[1]) / pinch.d));
    return;
  }
  const dx = e.clientX - last[0];
  const dy = e.clientY - last[1];
  last = [e.clientX, e.clientY];
  if (mode === 'pan') {
    pan = [pan[0] + dx, pan[1] + dy];
    transform();
  } else if (mode === 'window') {
    const [c, w] = windowing ?? [40, 400];
    setWindow(c + dy * 2, w + dx * 4);
  } else {
    scrollCarry += dy;
    while (Math.abs(scrollCarry) >= 12) {
      show(index + Math.sign(scrollCarry));
      scrollCarry -= Math.sign(scrollCarry) * 12;
    }
  }
});
const up = (e) => {
  pointers.delete(e.pointerId);
  if (pointers.size < 2) pinch = null;
};
stage.addEventListener('pointerup', up);
stage.addEventListener('pointercancel', up);
stage.addEventListener('wheel', (e) => {
  e.preventDefault();
  if (e.ctrlKey) setZoom(zoom * (e.deltaY < 0 ? 1.1 : 1 / 1.1));
  else show(index + Math.sign(e.deltaY));
}, { passive: false });

for (const b of root.querySelectorAll('button.series')) b.addEventListener('click', () => open(b.dataset.series, b));
for (const b of root.querySelectorAll('[data-mode]')) b.addEventListener('click', () => setMode(b.dataset.mode));
for (const b of root.querySelectorAll('[data-window]')) {
  b.addEventListener('click', () => {
    if (b.dataset.window === 'auto') {
      windowing = null;
      $('wl').textContent = '';
      show(index);
    } else {
      const [c, w] = b.dataset.window.split(',').map(Number);
      setWindow(c, w);
    }
  });
}
$('prev').addEventListener('click', () => show(index - 1));
$('next').addEventListener('click', () => show(index + 1));
$('play').addEventListener('click', play);
$('zoom-in').addEventListener('click', () => setZoom(zoom * 1.25));
$('zoom-out').addEventListener('click', () => setZoom(zoom / 1.25));
$('reset').addEventListener('click', () => { zoom = 1; pan = [0, 0]; transform(); windowing = null; $('wl').textContent = ''; show(index); });
slider.addEventListener('input', () => show(Number(slider.value) - 1));
document.addEventListener('keydown', (e) => {
  if (e.target.closest('input, textarea, select')) return;
  if (e.key === 'ArrowLeft' || e.key === 'ArrowUp') { show(index - 1); e.preventDefault(); }
  if (e.key === 'ArrowRight' || e.key === 'ArrowDown') { show(index + 1); e.preventDefault(); }
  if (e.key === ' ') { play(); e.preventDefault(); }
});
setMode('scroll');
transform();
const first = root.querySelector('button.series');
if (first) open(first.dataset.series, first);
