// The page: pick or drop a photo (or take one), classify it in the browser, show top-3, timing and
// the heat map. Nothing leaves the device: the photo is read from the file input and never sent.
//
// Hooks for automation (stable): [data-testid=top1] holds the top-1 class code and
// [data-testid=probs] the probabilities as JSON ({code: p}), both filled after each prediction;
// <body data-state> is loading | ready | busy | done | error, and <body data-runs> counts finished
// attempts (a prediction or an error message). window.kndnetApp.last holds the last input pixels,
// probabilities, class map and timings for parity tests.

import { classify, loadSession } from './classify.js';
import { drawResult } from './heatmap.js';
import { UserError, decodeFile, modelPixels, normalise } from './preprocess.js';

const $ = (id) => document.getElementById(id);
const state = { spec: null, session: null, runs: 0, last: null };
window.kndnetApp = state;

function setState(name, message, isError = false) {
  document.body.dataset.state = name;
  $('status').textContent = message;
  $('status').classList.toggle('error', isError);
}

function finish() {
  state.runs += 1;
  document.body.dataset.runs = String(state.runs);
}

function describeModel(spec) {
  const kb = (spec.bytes / 1024).toFixed(0);
  $('model').textContent = `Model: ${spec.name} (${spec.arch}, ${kb} KB, input ${spec.input_size} x `
    + `${spec.input_size} px, ${spec.classes.length} classes), run by ONNX Runtime Web on this device.`;
}

function showResult(result) {
  const { spec } = state;
  const order = result.probs.map((p, i) => [p, i]).sort((a, b) => b[0] - a[0]).slice(0, 3);
  $('top3').replaceChildren(...order.map(([p, i]) => {
    const item = document.createElement('li');
    const pct = (100 * p).toFixed(1);
    item.innerHTML = '<span class="name"></span><span class="bar"><span></span></span><span class="pct"></span>';
    item.querySelector('.name').textContent = `${spec.classes[i].name} (${spec.classes[i].code})`;
    item.querySelector('.bar span').style.width = `${pct}%`;
    item.querySelector('.pct').textContent = `${pct}%`;
    return item;
  }));
  const code = spec.classes[result.top].code;
  $('top1').textContent = code;
  $('probs').textContent = JSON.stringify(Object.fromEntries(spec.classes.map((c, i) => [c.code, result.probs[i]])));
  $('camclass').textContent = spec.classes[result.top].name;
  $('time').textContent = `Prediction took ${result.totalMs.toFixed(0)} ms on this device `
    + `(model ${result.ms.toFixed(0)} ms, preprocessing ${result.prepMs.toFixed(0)} ms).`;
  $('result').hidden = false;
}

async function predict(file) {
  if (!state.session) {
    setState('error', `${file.name}: the model has not loaded yet; wait for "Ready", or reload the page.`, true);
    finish();
    return;
  }
  setState('busy', `Classifying ${file.name}…`);
  try {
    const started = performance.now();
    const decoded = await decodeFile(file, state.spec.limits);
    const pixels = modelPixels(decoded.rgb, decoded.width, decoded.height, state.spec);
    const input = normalise(pixels, state.spec);
    const prepMs = performance.now() - started;
    const result = await classify(state.session, input, state.spec);
    result.totalMs = performance.now() - started;
    result.prepMs = prepMs;
    state.last = { file: file.name, pixels, ...result };
    drawResult($('photo'), $('heat'), decoded.bitmap, result.cam);
    showResult(result);
    setState('done', `${file.name}: done.`);
  } catch (err) {
    const message = err instanceof UserError ? err.message : `${file.name}: could not be classified (${err.message})`;
    $('result').hidden = true;
    setState('error', message, true);
  } finally {
    finish();
  }
}

function wireInputs() {
  for (const id of ['file', 'camera']) {
    $(id).addEventListener('change', (event) => {
      const [file] = event.target.files;
      if (file) predict(file);
      event.target.value = '';  // the same file chosen twice is classified twice
    });
  }
  const drop = $('drop');
  drop.addEventListener('dragover', (event) => { event.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (event) => {
    event.preventDefault();
    drop.classList.remove('over');
    const [file] = event.dataTransfer.files;
    if (file) predict(file);
  });
  $('showheat').addEventListener('change', (event) => { $('heat').hidden = !event.target.checked; });
}

function registerWorker() {
  if (!('serviceWorker' in navigator)) return;
  navigator.serviceWorker.register('./sw.js').catch((err) => {
    $('offline').textContent = `Offline use is off here (${err.message}); serve the app over HTTPS.`;
  });
}

async function start() {
  wireInputs();
  registerWorker();
  try {
    state.spec = await (await fetch('./model.json')).json();
    describeModel(state.spec);
    state.session = await loadSession(`./${state.spec.file}`);
    setState('ready', 'Ready: take or choose a photo of the lesion.');
  } catch (err) {
    setState('error', `The model could not be loaded (${err.message}); reload the page, or rebuild the app `
      + 'with `kndnet app`.', true);
  }
}

start();
