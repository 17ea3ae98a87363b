"""Entry point: `python evaluate.py [overrides]`; see configs/evaluate.yaml."""

import hydra
from omegaconf import DictConfig

from radio_curation.errors import exit_on_user_error, run_main
from radio_curation.tasks import evaluate as task


@hydra.main(config_path="configs", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """The run's headline metric (its stage's declaration names it), for Hydra sweepers to optimise."""
    with exit_on_user_error():
        return task.run(cfg)["headline"]


if __name__ == "__main__":
    run_main(main)
