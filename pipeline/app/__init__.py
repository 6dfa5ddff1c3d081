"""The onfh jobs (analyze, compare, batch) with their I/O, and the command line that runs them."""
