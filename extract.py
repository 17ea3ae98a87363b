"""Entry point: `python extract.py [overrides]`; see configs/extract.yaml."""

import hydra
from omegaconf import DictConfig

import radio_curation.tasks  # noqa: F401  (registers the config resolvers)
from radio_curation.errors import exit_on_user_error, run_main


@hydra.main(config_path="configs", config_name="extract", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """The run's headline metric (its stage's declaration names it), for Hydra sweepers to optimise."""
    # Imported once the config is composed: --help and --cfg job need none of the stages' libraries.
    from radio_curation.tasks import extract as task

    with exit_on_user_error():
        return task.run(cfg)["headline"]


if __name__ == "__main__":
    run_main(main)
