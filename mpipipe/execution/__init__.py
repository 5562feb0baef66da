"""Where tasks run: the scheduler on rank 0, executors on the others, workers under them."""
