// Ferry viewer: the series of a study as rendered images (the hub's WADO-RS /rendered, with the
// session cookie), paged with buttons, a slider or the arrow keys. Works on a phone.

const root = document.getElementById('viewer');
const study = root.dataset.study;
const img = document.getElementById('frame');
const slider = document.getElementById('slider');
const position = document.getElementById('position');
let images = [];
let index = 0;

const value = (obj, tag) => (obj[tag] && obj[tag].Value ? obj[tag].Value[0] : undefined);

function show(i) {
  if (!images.length) return;
  index = Math.max(0, Math.min(images.length - 1, i));
  const im = images[index];
  img.src = `/dicomweb/studies/${study}/series/${im.series}/instances/${im.sop}/rendered`;
  img.dataset.sop = im.sop;
  slider.value = String(index + 1);
  position.textContent = `${index + 1} / ${images.length}`;
  // Warm the cache for the next image.
  if (images[index + 1]) new Image().src = `/dicomweb/studies/${study}/series/${images[index + 1].series}/instances/${images[index + 1].sop}/rendered`;
}

async function open(series, button) {
  for (const b of root.querySelectorAll('button.series')) b.setAttribute('aria-pressed', String(b === button));
  const r = await fetch(`/dicomweb/studies/${study}/series/${series}/instances?includefield=00200013`, { headers: { accept: 'application/dicom+json' }, credentials: 'same-origin' });
  const list = r.ok ? await r.json() : [];
  images = list
    .map((o) => ({ series, sop: value(o, '00080018'), n: Number(value(o, '00200013') ?? 0) }))
    .sort((a, b) => a.n - b.n || (a.sop < b.sop ? -1 : 1));
  slider.max = String(Math.max(1, images.length));
  show(0);
}

for (const b of root.querySelectorAll('button.series')) b.addEventListener('click', () => open(b.dataset.series, b));
document.getElementById('prev').addEventListener('click', () => show(index - 1));
document.getElementById('next').addEventListener('click', () => show(index + 1));
slider.addEventListener('input', () => show(Number(slider.value) - 1));
document.addEventListener('keydown', (e) => {
  if (e.target.closest('input, textarea, select')) return;
  if (e.key === 'ArrowLeft' || e.key === 'ArrowUp') { show(index - 1); e.preventDefault(); }
  if (e.key === 'ArrowRight' || e.key === 'ArrowDown') { show(index + 1); e.preventDefault(); }
});
const first = root.querySelector('button.series');
if (first) open(first.dataset.series, first);
