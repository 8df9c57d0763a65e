"""Starts the reference: vantage6's own server (vantage6-server from PyPI) from a configuration
file, on 127.0.0.1 and the given port, as `v6 server start` would run it without Docker.

On Python 3.11 and later, format() of an enum mixed with str gives "Class.MEMBER" where 3.10
gave the value; vantage6 4.x builds its permission names with it, so 3.10's behaviour is put
back before vantage6 is imported.

usage: vantage6_server.py CONFIG PORT
"""

import enum
import sys


def _format(self, spec):
    if self._member_type_ is not object:
        return format(self._value_, spec)
    return format(str(self), spec)


enum.Enum.__format__ = _format

from vantage6.server import run_dev_server, run_server  # noqa: E402

app = run_server(sys.argv[1], system_folders=False)
run_dev_server(app, host="127.0.0.1", port=int(sys.argv[2]))
