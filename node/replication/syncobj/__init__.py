"""pysyncobj 0.3.17's `syncobj.py` and `journal.py`, patched where they break Raft's rules.

Everything else (transport, serializer, pickle, poller, config) is imported from the installed
pysyncobj, pinned to the same version; `background.py` extends its serializer to write
snapshots off the tick thread. See PATCHES.md beside this file for why these two modules are
copied, what each patch fixes and how to re-check them against a new release.
"""
from .syncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated

__all__ = ["FAIL_REASON", "SyncObj", "SyncObjConf", "replicated"]
