"""Entry point of one torchrun process: ``python -m synth.train --config CONFIG.json``."""

from __future__ import annotations

import argparse

from synth.train.config import TrainConfig
from synth.train.loop import train


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m synth.train")
    parser.add_argument("--config", required=True, help="TrainConfig JSON written by launch()")
    train(TrainConfig.load(parser.parse_args().config))


if __name__ == "__main__":
    main()
