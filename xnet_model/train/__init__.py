"""Training and evaluation: `xnet train` / `xnet eval` (see docs/training.md).

Import the submodules directly (`xnet_model.train.trainer.Trainer`, `.config`, `.checkpoint`);
this package imports nothing heavy on its own.
"""
