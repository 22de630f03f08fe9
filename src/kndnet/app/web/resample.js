// Image resizing that matches the Python pipeline pixel for pixel.
//
// Why not canvas drawImage: browsers resample with their own filters, so the model would see other
// pixels than in Python. Python's eval preprocessing (kndnet.inference.load_image) is two steps:
//   1. Pillow   Image.resize(BILINEAR)         decoded image -> load_size x load_size
//   2. torchvision resize(antialias=True)      load_size     -> input_size x input_size (uint8 tensor)
// Both are the same separable "antialiased bilinear" filter (a triangle whose support grows with the
// downscale factor, Pillow's Resample.c), horizontal pass first, each pass rounded to uint8. They differ
// only in the fixed-point precision of the weights: Pillow uses 22 bits, torch's uint8 kernel the
// largest precision that keeps every weight in int16 (ATen UpSampleKernel.cpp,
// _compute_indices_int16_weights_aa). Both are reproduced here; the browser test checks parity.

/** Pillow's fixed-point precision for 8-bit images (32 - 8 - 2 bits). */
export const PIL_PRECISION = () => 22;

/** torch's uint8 precision: the most bits for which the largest weight still fits in int16. */
export function torchPrecision(maxWeight) {
  let bits = 0;
  for (; bits < 22; bits += 1) {
    if (Math.trunc(0.5 + maxWeight * 2 ** (bits + 1)) >= 2 ** 15) break;
  }
  return bits;
}

function triangle(x) {
  x = Math.abs(x);
  return x < 1 ? 1 - x : 0;
}

/** Float weights (Pillow's precompute_coeffs): for each output index its first input index and weights. */
function floatWeights(inSize, outSize) {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = filterScale;  // the triangle's support (1) times the downscale factor
  const taps = [];
  for (let i = 0; i < outSize; i += 1) {
    const center = (i + 0.5) * scale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize);
    const w = [];
    let total = 0;
    for (let x = xmin; x < xmax; x += 1) {
      const v = triangle((x - center + 0.5) / filterScale);
      w.push(v);
      total += v;
    }
    taps.push({ xmin, w: total !== 0 ? w.map((v) => v / total) : w });
  }
  return taps;
}

/** Fixed-point weights with `precisionOf(maxWeight)` fractional bits, rounded half away from zero. */
function fixedWeights(inSize, outSize, precisionOf) {
  const taps = floatWeights(inSize, outSize);
  const maxWeight = Math.max(...taps.flatMap((t) => t.w));
  const bits = precisionOf(maxWeight);
  const one = 2 ** bits;
  const fixed = taps.map((t) => ({
    xmin: t.xmin,
    k: t.w.map((v) => Math.trunc(v < 0 ? -0.5 + v * one : 0.5 + v * one)),
  }));
  return { taps: fixed, bits };
}

const clip8 = (v) => (v < 0 ? 0 : v > 255 ? 255 : v);

/** One pass along x (axis 0) or y (axis 1) of an RGB uint8 image stored row-major, 3 bytes a pixel. */
function pass(src, width, height, outSize, axis, precisionOf) {
  const inSize = axis === 0 ? width : height;
  const { taps, bits } = fixedWeights(inSize, outSize, precisionOf);
  const outW = axis === 0 ? outSize : width;
  const outH = axis === 0 ? height : outSize;
  const out = new Uint8ClampedArray(outW * outH * 3);
  const half = 2 ** (bits - 1);
  const shift = 2 ** bits;
  for (let y = 0; y < outH; y += 1) {
    for (let x = 0; x < outW; x += 1) {
      const t = taps[axis === 0 ? x : y];
      for (let c = 0; c < 3; c += 1) {
        let ss = bits > 0 ? half : 0;
        for (let j = 0; j < t.k.length; j += 1) {
          const sx = axis === 0 ? t.xmin + j : x;
          const sy = axis === 0 ? y : t.xmin + j;
          ss += src[(sy * width + sx) * 3 + c] * t.k[j];
        }
        out[(y * outW + x) * 3 + c] = clip8(Math.floor(ss / shift));  // >> on sums beyond 2^31 is unsafe
      }
    }
  }
  return out;
}

/**
 * Resize an RGB uint8 image (row-major, 3 bytes a pixel) to outW x outH with the antialiased bilinear
 * filter, horizontal pass first; a dimension that already has its size is not resampled.
 * precisionOf: PIL_PRECISION (Pillow) or torchPrecision (torchvision on uint8 tensors).
 */
export function resizeAA(src, width, height, outW, outH, precisionOf) {
  let img = src;
  if (outW !== width) img = pass(img, width, height, outW, 0, precisionOf);
  if (outH !== height) img = pass(img, outW, height, outH, 1, precisionOf);
  return img;
}
