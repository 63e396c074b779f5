"""The engine: requests in, results out, through one continuous-batching loop (the loop, its
scheduler, prefix cache and runner, and the ranks of a tensor-parallel engine)."""
