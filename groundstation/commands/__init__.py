"""The `groundstation` commands, one module each. argparse lives here and nowhere else."""
