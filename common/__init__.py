"""The ground floor: what every part of regate shares, importing nothing else of regate.

- `errors`: the one exception root (RegateError) and its subclasses;
- `version`: regate's version;
- `env`: `os.environ/NAME` references in a config, resolved at run time;
- `money`: integer nano-USD, the unit of every amount;
- `opa`: the OPA binary (found, never bundled) and an `opa run --server` child process.
"""
