// Drawing only: the photo and its class activation map on canvases, for people to look at. Nothing
// here feeds the model (its pixels come from preprocess.js).

/** The "jet" colour map, as OpenCV's COLORMAP_JET that `kndnet explain` overlays use. */
function jet(v) {
  const r = Math.min(Math.max(1.5 - Math.abs(4 * v - 3), 0), 1);
  const g = Math.min(Math.max(1.5 - Math.abs(4 * v - 2), 0), 1);
  const b = Math.min(Math.max(1.5 - Math.abs(4 * v - 1), 0), 1);
  return [r * 255, g * 255, b * 255];
}

/** Draw `bitmap` scaled to the canvas's width, and the map (stretched over the whole photo, as the
 * model saw it) on the overlay canvas. */
export function drawResult(photo, overlay, bitmap, cam, maxSide = 640) {
  const scale = Math.min(1, maxSide / Math.max(bitmap.width, bitmap.height));
  for (const canvas of [photo, overlay]) {
    canvas.width = Math.round(bitmap.width * scale);
    canvas.height = Math.round(bitmap.height * scale);
  }
  photo.getContext('2d').drawImage(bitmap, 0, 0, photo.width, photo.height);
  const small = new OffscreenCanvas(cam.w, cam.h);
  const ctx = small.getContext('2d');
  const image = ctx.createImageData(cam.w, cam.h);
  cam.values.forEach((v, i) => {
    const [r, g, b] = jet(v);
    image.data.set([r, g, b, 255], i * 4);
  });
  ctx.putImageData(image, 0, 0);
  const out = overlay.getContext('2d');
  out.imageSmoothingEnabled = true;
  out.imageSmoothingQuality = 'high';
  out.clearRect(0, 0, overlay.width, overlay.height);
  out.drawImage(small, 0, 0, overlay.width, overlay.height);
}
