"""Training-loader throughput on real images: JPEG decoding vs the decoded uint8 cache.

Both loaders apply the method's training augmentations (random resized crop, flips, rotation, colour
jitter) and batch the result, exactly as training does. The cache's one-off build time is printed
too. Usage: python benchmarks/bench_loader.py [--data ../shared/data/ham10000] [--images 1024]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from _common import data_arg, subset
from torch.utils.data import DataLoader

from kndnet.config import DataConfig
from kndnet.data.cache import build_cache
from kndnet.data.datasets import LesionDataset, RandomView
from kndnet.data.manifest import build_manifest
from kndnet.data.transforms import resize_for_training


def throughput(dataset: LesionDataset, workers: int, batch: int) -> float:
    loader = DataLoader(dataset, batch_size=batch, num_workers=workers, shuffle=True)
    start = time.perf_counter()
    count = sum(len(b["label"]) for b in loader)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data_arg(parser)
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    manifest, _, _ = build_manifest(DataConfig(path=args.data))
    rows = subset(manifest, args.images)
    load_size = resize_for_training(args.image_size, 256 / 224)
    jpeg = LesionDataset(rows, RandomView(args.image_size), load_size=load_size)
    with tempfile.TemporaryDirectory() as cache_dir:
        start = time.perf_counter()
        cache = build_cache(rows["path"].tolist(), load_size, cache_dir)
        build_seconds = time.perf_counter() - start
        cached = LesionDataset(rows, RandomView(args.image_size), cache=cache, load_size=load_size)
        jpeg_rate = throughput(jpeg, args.workers, args.batch_size)
        cache_rate = throughput(cached, args.workers, args.batch_size)
    print(f"{len(rows)} images, {args.image_size} px views from {load_size} px, {args.workers} workers")
    print(f"  JPEG decode + augment : {jpeg_rate:7.1f} img/s")
    print(f"  decoded cache + augment: {cache_rate:7.1f} img/s")
    print(f"  ratio cache / JPEG     : {cache_rate / jpeg_rate:5.2f}x")
    print(f"  cache build (one-off)  : {build_seconds:.1f} s ({len(rows) / build_seconds:.0f} img/s)")


if __name__ == "__main__":
    main()
