"""The Slurm executor: attempts the daemon decided are handed to sbatch, and Slurm places them."""
