"""Run by test_training's DDP test: a 2-rank CPU DDP fit that records, per rank, the images it trained and
validated on, its batch losses and its validation predictions (rank<N>.json in the run directory).

Lightning's DDP launcher re-runs this script once per extra rank, so it must be a plain script.
Usage: python tests/ddp_probe.py MANIFEST RUN_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from lightning.pytorch.callbacks import Callback  # noqa: E402

from kndnet.training.fit import fit  # noqa: E402
from tests.helpers import tiny_config  # noqa: E402


class RecordRank(Callback):
    def __init__(self, out: Path) -> None:
        self.out, self.train, self.val = out, [], []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        ids = trainer.train_dataloader.dataset.image_ids
        self.train.append({"epoch": trainer.current_epoch, "ids": [ids[i] for i in batch["index"].tolist()],
                           "loss": float(outputs["loss"])})

    def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0):
        if trainer.sanity_checking:
            return
        ids = trainer.val_dataloaders.dataset.image_ids
        pred = module(batch["image"]).argmax(1)
        self.val.append({"epoch": trainer.current_epoch, "ids": [ids[i] for i in batch["index"].tolist()],
                         "correct": (pred == batch["label"]).tolist()})

    def on_train_end(self, trainer, module):
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps({"train": self.train, "val": self.val}))


if __name__ == "__main__":
    manifest, run = Path(sys.argv[1]), Path(sys.argv[2])
    cfg = tiny_config("student", manifest, **{"train.devices": "2", "train.strategy": "ddp",
                                              "train.accelerator": "cpu", "train.sampler": "random",
                                              "data.batch_size": 8, "train.early_stop_patience": 0})
    fit(cfg, run, extra_callbacks=[RecordRank(run)])
    torch.distributed.destroy_process_group()  # as the command line does: not left to interpreter exit
