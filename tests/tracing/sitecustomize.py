"""Loaded by a workflow test's subprocesses (on ``PYTHONPATH``): every ``h5py.File`` opened on
``$TRACE_H5_FILE`` appends the gpo_vae/tasks functions that opened it to ``$TRACE_H5_LOG``, one
line per open, innermost first (e.g. ``contract_on_disk.py:_open_counts_h5ad < ...``)."""

import os
import traceback

_LOG = os.environ.get("TRACE_H5_LOG")
_WATCHED = os.environ.get("TRACE_H5_FILE")

if _LOG and _WATCHED:
    import h5py

    _open = h5py.File.__init__

    def _traced(self, name, *args, **kwargs):
        if isinstance(name, str | os.PathLike) and os.path.realpath(name) == os.path.realpath(_WATCHED):
            frames = [
                f"{os.path.basename(frame.filename)}:{frame.name}"
                for frame in traceback.extract_stack()[:-1]
                if "gpo_vae" in frame.filename or f"{os.sep}tasks{os.sep}" in frame.filename
            ]
            with open(_LOG, "a") as log:
                log.write(" < ".join(reversed(frames)) + "\n")
        return _open(self, name, *args, **kwargs)

    h5py.File.__init__ = _traced
