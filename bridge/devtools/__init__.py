"""Developer tooling, not the product: the test stack, private PostgreSQL clusters, the invariant oracle, the
demo and the benchmarks. Needs the `dev` extra (pgserver)."""
