"""Search drivers, the objective, Optuna and Ray Tune backends, and the autocompress CLI."""
