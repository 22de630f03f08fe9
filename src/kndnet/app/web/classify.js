// ONNX Runtime Web (WASM backend, one thread) running the app's model: logits and class activation maps.
//
// The model file is the int8 export with a `class_maps` output grafted on (kndnet/deploy/cam_graph.py):
// class_maps[k] = sum_c W[k, c] * features[c], which for the student's pool + linear head is Grad-CAM up
// to scale. One thread needs no cross-origin isolation, so any static host serves the app.

import * as ort from './ort/ort.wasm.bundle.min.mjs';

/** Load the model once. The bundle embeds its .mjs loader; naming only the .wasm keeps it from fetching
 * a separate loader file. */
export async function loadSession(modelUrl) {
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.wasmPaths = { wasm: new URL('./ort/ort-wasm-simd-threaded.wasm', import.meta.url).href };
  return ort.InferenceSession.create(modelUrl, { executionProviders: ['wasm'] });
}

/** Softmax of logits / calibration temperature, as kndnet.inference does. */
export function softmax(logits, temperature) {
  const z = Array.from(logits, (v) => v / temperature);
  const top = Math.max(...z);
  const e = z.map((v) => Math.exp(v - top));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / sum);
}

/** The map of class k: ReLU, then scaled to [0, 1] (pytorch-grad-cam's scale_cam_image); h x w row-major. */
export function classMap(maps, k) {
  const [, , h, w] = maps.dims;
  const n = h * w;
  const cam = Array.from(maps.data.subarray(k * n, (k + 1) * n), (v) => Math.max(v, 0));
  const low = Math.min(...cam);
  const high = Math.max(...cam.map((v) => v - low));
  return { h, w, values: cam.map((v) => (v - low) / (high + 1e-7)) };
}

/** Run the model on NCHW float32 input; {probs, cam (of the top class), top, ms}. */
export async function classify(session, input, spec) {
  const tensor = new ort.Tensor('float32', input, [1, 3, spec.input_size, spec.input_size]);
  const started = performance.now();
  const out = await session.run({ [session.inputNames[0]]: tensor });
  const ms = performance.now() - started;
  const probs = softmax(out.logits.data, spec.calibration_temperature);
  const top = probs.indexOf(Math.max(...probs));
  return { probs, top, cam: classMap(out.class_maps, top), ms };
}
