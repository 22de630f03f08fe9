// From a user's file to the model's input tensor, exactly as Python's kndnet.inference.load_image does.
//
//   decode      the browser's decoder, EXIF orientation applied, no colour-space conversion, alpha over
//               black (Python: data/images.py load_rgb)
//   resize      to load_size, then to input_size, with Pillow's and torchvision's own arithmetic
//               (resample.js; canvas scaling is never used for the model's pixels)
//   normalise   (x - 255 * mean) / (255 * std) per channel, RGB order, NCHW float32 (inference.normalise)
//
// Colour constancy, when a model's spec names one, is a layer inside the ONNX graph (models/colour.py),
// so it is not repeated here. Sizes, mean and std come from model.json, which `kndnet app` writes from
// the ONNX file's own metadata.

import { resizeAA, PIL_PRECISION, torchPrecision } from './resample.js';

/** A problem with the user's file: shown on the page as it is. */
export class UserError extends Error {}

const JPEG_START = [0xff, 0xd8];
const PNG_START = [0x89, 0x50, 0x4e, 0x47];

function startsWith(bytes, prefix) {
  return prefix.every((b, i) => bytes[i] === b);
}

/** True when a JPEG or PNG file ends as its format requires (browsers draw truncated files half grey). */
export function looksComplete(bytes) {
  let end = bytes.length;
  while (end > 0 && bytes[end - 1] === 0) end -= 1;  // some writers pad with zeros
  if (startsWith(bytes, JPEG_START)) return end >= 4 && bytes[end - 2] === 0xff && bytes[end - 1] === 0xd9;
  if (startsWith(bytes, PNG_START)) {
    const iend = [0x49, 0x45, 0x4e, 0x44];
    return end >= 12 && iend.every((b, i) => bytes[end - 8 + i] === b);
  }
  return true;  // other formats: the decoder decides
}

function imageSize(url, name) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve([img.naturalWidth, img.naturalHeight]);
    img.onerror = () => reject(new UserError(
      `${name}: cannot be read as an image (corrupt, or not a picture); choose a JPEG or PNG photo`));
    img.src = url;
  });
}

/** Check the file, then decode it to RGB: {rgb: Uint8Array (3 bytes a pixel), width, height, bitmap}. */
export async function decodeFile(file, limits) {
  const name = file.name || 'the file';
  if (file.type && !file.type.startsWith('image/')) {
    throw new UserError(`${name}: a ${file.type} file, not an image; choose a JPEG or PNG photo`);
  }
  if (file.size === 0) throw new UserError(`${name}: the file is empty; choose a JPEG or PNG photo`);
  if (file.size > limits.max_bytes) {
    throw new UserError(`${name}: ${(file.size / 1e6).toFixed(0)} MB is over the ${limits.max_bytes / 1e6} MB `
      + 'limit; downscale the image first');
  }
  const bytes = new Uint8Array(await file.arrayBuffer());
  if (!looksComplete(bytes)) {
    throw new UserError(`${name}: the image file is truncated (it ends before the picture does); `
      + 'copy or export it again');
  }
  const url = URL.createObjectURL(file);
  try {
    const [width, height] = await imageSize(url, name);
    if (width * height > limits.max_pixels) {
      throw new UserError(`${name}: ${width}x${height} pixels is over the ${limits.max_pixels.toLocaleString('en')}`
        + '-pixel limit (decompression-bomb guard); downscale the image first');
    }
    return await toRgb(file, name);
  } finally {
    URL.revokeObjectURL(url);
  }
}

async function toRgb(file, name) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, {
      colorSpaceConversion: 'none', premultiplyAlpha: 'none', imageOrientation: 'from-image' });
  } catch (err) {
    throw new UserError(`${name}: cannot be decoded (${err.message}); re-export it as JPEG or PNG`);
  }
  const { width, height } = bitmap;
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext('2d', { willReadFrequently: true, colorSpace: 'srgb' });
  ctx.fillStyle = '#000';  // transparent pixels over black, as Python's decoder does
  ctx.fillRect(0, 0, width, height);
  ctx.drawImage(bitmap, 0, 0);
  const rgba = ctx.getImageData(0, 0, width, height).data;
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    rgb[j] = rgba[i]; rgb[j + 1] = rgba[i + 1]; rgb[j + 2] = rgba[i + 2];
  }
  return { rgb, width, height, bitmap };
}

/** The model's uint8 input pixels (input_size^2 x 3, row-major RGB) from decoded RGB. */
export function modelPixels(rgb, width, height, spec) {
  const load = resizeAA(rgb, width, height, spec.load_size, spec.load_size, PIL_PRECISION);
  return resizeAA(load, spec.load_size, spec.load_size, spec.input_size, spec.input_size, torchPrecision);
}

/** NCHW float32 input: (x - 255 * mean) / (255 * std), computed in float32 like torch. */
export function normalise(pixels, spec) {
  const n = spec.input_size * spec.input_size;
  const out = new Float32Array(3 * n);
  for (let c = 0; c < 3; c += 1) {
    const mean = Math.fround(Math.fround(spec.mean[c]) * 255);
    const std = Math.fround(Math.fround(spec.std[c]) * 255);
    for (let i = 0; i < n; i += 1) out[c * n + i] = Math.fround(pixels[i * 3 + c] - mean) / std;
  }
  return out;
}
