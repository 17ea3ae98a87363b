"""The project's Hydra plugins: its SLURM launcher."""
