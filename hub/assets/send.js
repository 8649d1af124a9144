// Ferry send page: choose or drop files, folders, ZIPs or a CD; see what was found before
// anything is sent; send with a progress bar. Files go up in batches; a batch that breaks is
// retried, and a file the hub could not take is retried on its own — never the whole sending.

import { REASONS, scanFiles } from './scan.js';

const form = document.getElementById('send');
const texts = JSON.parse(document.getElementById('texts').textContent);
const de = document.documentElement.lang === 'de';
const L = de
  ? { scanning: 'Dateien werden geprüft …', none: 'Keine DICOM-Bilder gefunden.', skipped: 'übersprungen', creating: 'Sendung wird angelegt …', uploading: 'Wird hochgeladen', retry: 'Erneuter Versuch', failed: 'Diese Dateien konnten nicht übernommen werden:', sendRest: 'Ohne sie senden', sending: 'Wird abgeschickt …', done: 'Gesendet.', error: 'Fehler' }
  : { scanning: 'Checking files …', none: 'No DICOM images found.', skipped: 'skipped', creating: 'Opening the sending …', uploading: 'Uploading', retry: 'Retrying', failed: 'The hub could not take these files:', sendRest: 'Send without them', sending: 'Sending …', done: 'Sent.', error: 'Error' };

// Why the scanner left a file out, in German where the page is German.
const REASONS_DE = {
  hidden: 'versteckte Datei', empty: 'leere Datei', dicomdir: 'DICOMDIR (Inhaltsverzeichnis der CD)', notDicom: 'keine DICOM-Datei',
  damaged: 'beschädigter DICOM-Kopf', truncated: 'abgeschnittene DICOM-Datei', tooLarge: 'DICOM-Kopf zu groß zum Prüfen',
  nestedZip: 'ZIP in einer ZIP (nicht geprüft)', damagedZip: 'beschädigte ZIP-Datei', encrypted: 'verschlüsselter ZIP-Eintrag',
  zipMethod: 'nicht unterstützte ZIP-Kompression', unsafePath: 'unsicherer Pfad in der ZIP', unreadable: 'nicht lesbar',
};
const reason = (r) => {
  if (!de) return r;
  const key = Object.keys(REASONS).find((k) => REASONS[k] === r);
  return key && REASONS_DE[key] ? REASONS_DE[key] : r;
};

const summary = document.getElementById('summary');
const progress = document.getElementById('progress');
const status = document.getElementById('status');
const submit = document.getElementById('submit');
const drop = document.getElementById('drop');
let chosen = []; // File objects named by their path
let scan = null;

const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
};
const size = (b) => (b < 1e3 ? `${b} B` : b < 1e6 ? `${(b / 1e3).toFixed(1)} KB` : b < 1e9 ? `${(b / 1e6).toFixed(1)} MB` : `${(b / 1e9).toFixed(2)} GB`);
const pname = (pn) => { const [f, g] = (pn || '').split('=')[0].split('^'); return g ? `${f}, ${g}` : (f || ''); };
const pdate = (da) => (/^\d{8}$/.test(da || '') ? (de ? `${da.slice(6)}.${da.slice(4, 6)}.${da.slice(0, 4)}` : `${da.slice(0, 4)}-${da.slice(4, 6)}-${da.slice(6)}`) : (da || ''));
const pathOf = (f) => f.webkitRelativePath || f.name;

async function choose(files) {
  chosen = files.map((f) => (f.webkitRelativePath ? new File([f], f.webkitRelativePath, { type: f.type, lastModified: f.lastModified }) : f));
  submit.disabled = true;
  summary.replaceChildren();
  status.textContent = L.scanning;
  scan = await scanFiles(chosen, ({ done, total }) => { status.textContent = `${L.scanning} ${done}/${total}`; });
  status.textContent = '';
  render();
  submit.disabled = scan.instances === 0;
}

function render() {
  if (scan.instances === 0) {
    summary.replaceChildren(el('p', { class: 'error', role: 'alert' }, L.none));
    return;
  }
  const rows = scan.studies.map((s) =>
    el('tr', {}, el('td', {}, pname(s.patientName)), el('td', {}, pdate(s.birthDate)), el('td', {}, s.patientId || ''),
      el('td', {}, `${pdate(s.date)} ${s.description || ''} ${(s.modalities || []).join('/')}`),
      el('td', {}, String(s.series.length)), el('td', {}, String(s.instances)), el('td', {}, size(s.bytes))));
  const head = el('tr', {}, ...[texts['transfer.patient'], texts['transfer.birth'], texts['transfer.pid'], texts['transfer.studies'], texts['transfer.series'], texts['transfer.images'], texts['transfer.size']].map((t) => el('th', {}, t)));
  const table = el('table', { id: 'found' }, el('thead', {}, head), el('tbody', {}, ...rows));
  const parts = [el('h2', {}, texts['send.found']), el('div', { class: 'table-wrap' }, table),
    el('p', { id: 'found-total' }, `${scan.instances} ${texts['transfer.images']} · ${size(scan.bytes)}`)];
  if (scan.skipped.length) parts.push(el('p', { class: 'muted' }, `${scan.skipped.length} ${L.skipped}: ${scan.skipped.slice(0, 5).map((s) => `${s.name} (${reason(s.reason)})`).join(', ')}${scan.skipped.length > 5 ? ' …' : ''}`));
  summary.replaceChildren(...parts);
}

for (const id of ['files', 'folder']) {
  document.getElementById(id).addEventListener('change', (e) => choose([...e.target.files]));
}

// Dropped folders are walked through the entries API; paths are kept as file names.
async function walk(entry, out) {
  if (entry.isFile) {
    const f = await new Promise((res, rej) => entry.file(res, rej));
    out.push(new File([f], entry.fullPath.replace(/^\//, ''), { type: f.type, lastModified: f.lastModified }));
  } else if (entry.isDirectory) {
    const reader = entry.createReader();
    for (;;) {
      const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
      if (!batch.length) break;
      for (const e of batch) await walk(e, out);
    }
  }
}
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', async (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  const entries = [...e.dataTransfer.items].map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry()).filter(Boolean);
  const out = [];
  if (entries.length) { for (const en of entries) await walk(en, out); } else out.push(...e.dataTransfer.files);
  choose(out);
});

async function api(method, path, body) {
  const r = await fetch(path, { method, headers: body ? { 'content-type': 'application/json' } : {}, body: body ? JSON.stringify(body) : undefined, credentials: 'same-origin' });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data.detail || `${r.status}`);
  return data;
}

// One upload request; resolves with the hub's report, rejects when the request itself broke.
function upload(id, files, onBytes) {
  return new Promise((resolve, reject) => {
    const fd = new FormData();
    for (const f of files) fd.append('file', f, pathOf(f));
    const xhr = new XMLHttpRequest();
    xhr.open('POST', `/api/v1/transfers/${id}/files`);
    xhr.upload.onprogress = (e) => onBytes(e.loaded);
    xhr.onload = () => {
      let report = null;
      try { report = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      if ((xhr.status === 200 || xhr.status === 202 || xhr.status === 422) && report && report.files) resolve(report);
      else reject(new Error((report && report.detail) || `HTTP ${xhr.status}`));
    };
    xhr.onerror = () => reject(new Error('network error'));
    xhr.send(fd);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function batches(files) {
  const out = [];
  let cur = [], bytes = 0;
  for (const f of files) {
    if (cur.length && (bytes + f.size > 32e6 || cur.length >= 64)) { out.push(cur); cur = []; bytes = 0; }
    cur.push(f); bytes += f.size;
  }
  if (cur.length) out.push(cur);
  return out;
}

form.addEventListener('submit', async (e) => {
  e.preventDefault();
  if (!scan || !scan.instances) return;
  submit.disabled = true;
  const skipped = new Set(scan.skipped.map((s) => s.name));
  const files = chosen.filter((f) => !skipped.has(pathOf(f)));
  const total = files.reduce((n, f) => n + f.size, 0) || 1;
  let sent = 0;
  progress.hidden = false;
  progress.value = 0;
  const show = (extra) => { progress.value = Math.min(100, (100 * sent) / total); status.textContent = `${L.uploading} ${Math.floor(progress.value)} % ${extra || ''}`; };
  try {
    status.textContent = L.creating;
    const t = await api('POST', '/api/v1/transfers', { community: form.dataset.community, reason: form.reason.value, appointment: form.appointment.value, urgency: form.urgency.value });
    const failed = new Map(); // path → reason
    const send = async (batch, attempt = 0) => {
      const before = sent;
      try {
        const report = await upload(t.id, batch, (loaded) => { sent = before + Math.min(loaded, batch.reduce((n, f) => n + f.size, 0)); show(); });
        sent = before + batch.reduce((n, f) => n + f.size, 0);
        for (const r of report.files) if (r.outcome === 'failed') failed.set(r.path, r.reason || L.error);
        for (const f of batch) if (!report.files.some((r) => r.path === pathOf(f) && r.outcome === 'failed')) failed.delete(pathOf(f));
      } catch (err) {
        sent = before;
        if (attempt >= 3) { for (const f of batch) failed.set(pathOf(f), err.message); return; }
        show(`– ${L.retry} (${err.message})`);
        await sleep(1000 * 2 ** attempt);
        return send(batch, attempt + 1);
      }
    };
    for (const b of batches(files)) await send(b);
    // Files the hub refused or that broke: once more, each on its own.
    for (const f of files.filter((f) => failed.has(pathOf(f)))) {
      sent -= f.size;
      await send([f], 2);
    }
    sent = total;
    show();
    if (failed.size) {
      const list = el('ul', {}, ...[...failed].map(([p, r]) => el('li', {}, `${p}: ${r}`)));
      const rest = el('button', { type: 'button', id: 'send-rest' }, L.sendRest);
      rest.addEventListener('click', () => finish(t.id));
      summary.append(el('div', { class: 'error', role: 'alert' }, L.failed, list), rest);
      return;
    }
    await finish(t.id);
  } catch (err) {
    status.textContent = `${L.error}: ${err.message}`;
    submit.disabled = false;
  }
});

async function finish(id) {
  status.textContent = L.sending;
  await api('POST', `/api/v1/transfers/${id}/send`);
  progress.value = 100;
  status.textContent = L.done;
  // A moment to see the full bar and "Sent." before the transfer's page opens.
  await sleep(600);
  location.href = `/transfers/${id}`;
}
