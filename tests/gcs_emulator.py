"""The GCS emulator of the cloud-storage tests: `gcp-storage-emulator`, plus what tensorstore needs.

    python tests/gcs_emulator.py start --host=127.0.0.1 --port=PORT --in-memory --default-bucket=B

takes the arguments of the `gcp-storage-emulator` command. The emulator (2026.7.19) sends no
`x-goog-generation` header with an object's content and ignores the generation preconditions
of a read; tensorstore's OCDBT driver (orbax's checkpoint arrays) reads an object's generation
from that header and re-reads its manifest with `ifGenerationNotMatch`, and fails with
'Malformed StorageGeneration' without them (intermittently: only when it re-reads). Real GCS
does both; this wrapper adds them to the emulator's download handler and starts it.
"""

import sys
from http import HTTPStatus

from gcp_storage_emulator import server
from gcp_storage_emulator.__main__ import main
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

_emulator_download = objects.download


def download(request, response, storage, *args, **kwargs):
  """The emulator's download, with the generation header and read preconditions of GCS."""
  try:
    obj = storage.get_file_obj(request.params['bucket_name'], request.params['object_id'])
  except NotFound:
    return _emulator_download(request, response, storage, *args, **kwargs)
  generation = str(obj['generation'])
  response['x-goog-generation'] = generation
  response['x-goog-metageneration'] = str(obj.get('metageneration', '1'))
  if_match = request.query.get('ifGenerationMatch')
  if_not_match = request.query.get('ifGenerationNotMatch')
  if if_match and if_match[0] != generation:
    response.status = HTTPStatus.PRECONDITION_FAILED
    return None
  if if_not_match and if_not_match[0] == generation:
    response.status = HTTPStatus.NOT_MODIFIED
    return None
  return _emulator_download(request, response, storage, *args, **kwargs)


def _install() -> None:
  objects.download = download  # objects.get (JSON API, alt=media) looks it up here
  server.HANDLERS = tuple(
      (pattern, {method: download if handler is _emulator_download else handler
                 for method, handler in handlers.items()})
      for pattern, handlers in server.HANDLERS)


if __name__ == '__main__':
  _install()
  sys.exit(main(sys.argv[1:]))
