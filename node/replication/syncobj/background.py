"""A snapshot written in the background: pysyncobj's Serializer, for a custom serializer that
returns a Future instead of writing the whole snapshot on the tick thread."""

import glob
import logging
import os
from concurrent.futures import Future

from pysyncobj.atomic_replace import atomicReplace
from pysyncobj.serializer import SERIALIZER_STATE, Serializer

logger = logging.getLogger(__name__)


class BackgroundSerializer(Serializer):
    """Serializer whose custom `serializer(tmpPath, meta)` returns a Future: the snapshot is
    complete when it resolves. Until then `checkSerializing` reports SERIALIZING (Raft goes on
    ticking, applying and answering); once it resolved, the file is renamed into place on the
    tick thread and reported SUCCESS, so the log is trimmed only behind a complete snapshot.
    Upstream calls the serializer and renames its file at once, on the tick thread.

    The previous snapshot stays in place, and can be sent to followers, while the next one is
    written. A snapshot received from the leader and installed meanwhile makes the one being
    written stale: it is dropped, never moved over the newer one (nor the log trimmed by it).
    A custom serializer returning anything else is taken as done when it returns."""

    def __init__(self, fileName, transmissionBatchSize, serializer, deserializer):
        Serializer.__init__(
            self, fileName, transmissionBatchSize, False, serializer, deserializer, None
        )
        self._fileName = fileName
        self._write = serializer
        self._pending = None  # (future, temporary path, id)
        for stale in glob.glob(glob.escape(fileName) + '.at-*.tmp'):  # a process died writing
            os.remove(stale)

    def serialize(self, data, id):
        if self._pending is not None:
            return
        # A path of its own: a dropped snapshot may still be being written when the next starts.
        tmpFile = '%s.at-%d.tmp' % (self._fileName, id)
        try:
            result = self._write(tmpFile, data[1:])
        except Exception as e:
            result = Future()
            result.set_exception(e)
        if not isinstance(result, Future):  # written already
            written, result = result, Future()
            result.set_result(written)
        self._pending = (result, tmpFile, id)

    def checkSerializing(self):
        if self._pending is not None:
            future, tmpFile, id = self._pending
            if not future.done():
                return SERIALIZER_STATE.SERIALIZING, id
            self._pending = None
            if future.exception() is not None:
                logger.error('failed to write a snapshot: %r', future.exception())
                return SERIALIZER_STATE.FAILED, id
            return self._install(tmpFile), id
        return SERIALIZER_STATE.NOT_SERIALIZING, None

    def setTransmissionData(self, data):
        installed = Serializer.setTransmissionData(self, data)
        if installed and self._pending is not None:
            future, tmpFile, _ = self._pending
            self._pending = None
            future.add_done_callback(lambda _: _remove(tmpFile))
        return installed

    def _install(self, tmpFile):
        try:
            atomicReplace(tmpFile, self._fileName)
        except OSError:
            logger.exception('failed to move a snapshot into place')
            return SERIALIZER_STATE.FAILED
        return SERIALIZER_STATE.SUCCESS


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass
