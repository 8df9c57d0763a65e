"""data-summary: what a node's data looks like to an algorithm, read with vantage6's own
`@data` decorator.

- `summary(df, column)`: rows, columns and the sum of `column` of the first database the task
  asked for;
- `probe(df)`: what the run can and cannot do with its data and its neighbours': whether the
  database file can be written, which database parameters it was given, and what it sees of
  the node's folders;
- `wait(df, seconds)`: holds the run (to be killed).
"""

import os
import time

from vantage6.algorithm.tools.decorators import data


@data(1)
def summary(df, column=None):
    return {
        "rows": int(len(df)),
        "columns": [str(c) for c in df.columns],
        "sum": float(df[column].sum()) if column else None,
    }


@data(1)
def probe(df):
    label = os.environ["USER_REQUESTED_DATABASE_LABELS"].split(",")[0]
    uri = os.environ[f"{label.upper()}_DATABASE_URI"]
    try:
        with open(uri, "a") as f:
            f.write("tampered\n")
        writable = True
    except OSError:
        writable = False
    try:
        os.remove(uri)
        removable = True
    except OSError:
        removable = False
    mounts = sorted(os.listdir("/mnt"))
    return {
        "rows": int(len(df)),
        "writable": writable,
        "removable": removable,
        "db_labels": os.environ.get("DB_LABELS"),
        "params": sorted(k for k in os.environ if "_DB_PARAM_" in k),
        "mounts": mounts,
        "algonet": sorted(os.listdir("/mnt/algonet")),
    }


@data(1)
def wait(df, seconds=300):
    time.sleep(seconds)
    return {"rows": int(len(df))}
