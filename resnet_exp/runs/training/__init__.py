"""One training run: the loop and the measurements that hook into it."""
