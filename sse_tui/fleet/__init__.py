"""Many generators as one live test (docs/fleet.md).

A generator run with `--fleet NAME` publishes its `--json` summary once a second on the
run's Redis and takes fleet commands (`publisher`, `commands`); `sse-tui fleet NAME` reads
them all, merges them exactly as `sse-tui merge` does and steers them (`monitor`, `view`,
`main`). What goes over Redis, and under which names, is in `wire`.
"""
