"""The experiment matrix: {models} x {batch sizes} x {workloads} x {runtimes} (x parallelism),
run unattended and resumably into a results store (docs/experiments.md).

  schema.py  the experiment file's schema (pydantic)
  locate.py  key path -> line of the TOML file, for error messages
  spec.py    reading and validating a file (errors name the key and the line)
  cells.py   expansion into cells: exclusions, overrides, the cell id (a hash)
  estimate.py how long the cells take (pure)
  models.py  model sources: paths, hub names, and tiny models made locally
  store.py   the results store: cell records, locks, attempts, the server ledger
  runner.py  running the cells: one server start per server configuration
  commands.py ``loadgen matrix plan|run|report``
"""
