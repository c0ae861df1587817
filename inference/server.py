"""`launch.py serve`: a run's engine behind an HTTP JSON API (aiohttp), batching concurrent
requests into shared decode steps (inference/batcher.py).

  GET  /health          {"status": "ok", "kind": ..., "step": ...} once the model is loaded
  GET  /stats           requests and batches served, by batch size
  POST /v1/completions  {"prompt": str, "max_tokens": int, "temperature": float, "top_k": int,
                         "top_p": float, "seed": int} (all but prompt optional; defaults as
                         `launch.py sample`, temperature 0, max_tokens 200 or the context
                         minus one if shorter) -> {"completion": str,
                         "batch_size": int}   (language models)
  POST /v1/classify     {"text": str} -> {"label": ..., ..., "batch_size": int}  (classifiers)

A malformed request (not JSON, a missing or mistyped field, an unknown field, a value out of
range, the endpoint of the other kind of model) is answered 400 with {"error": message}; the
server goes on. The model is loaded before the port opens, so a health check that answers means
ready. SIGTERM (or Ctrl-C) stops accepting connections, finishes the requests in flight (up to
`--shutdown_timeout` seconds), then exits 0.
"""

import asyncio
import json
import sys

from aiohttp import web

from errors import UserError
from inference.batcher import Batcher
from inference.engine import SamplingOptions, load_engine

COMPLETION_FIELDS = {'prompt': str, 'max_tokens': int, 'temperature': (int, float),
                     'top_k': int, 'top_p': (int, float), 'seed': int}
CLASSIFY_FIELDS = {'text': str}
DEFAULT_MAX_TOKENS = 200
BATCHER = web.AppKey('batcher', Batcher)
WORKER = web.AppKey('worker', asyncio.Task)


class BadRequest(Exception):
  """A client mistake: answered 400 with its message."""


def _fail(message: str, status: int = 400) -> web.Response:
  return web.json_response({'error': message}, status=status)


async def _json_body(request: web.Request, fields: dict, required: str) -> dict:
  try:
    body = await request.json()
  except (json.JSONDecodeError, UnicodeDecodeError):
    raise BadRequest('the body is not JSON; send a JSON object') from None
  if not isinstance(body, dict):
    raise BadRequest('the body must be a JSON object')
  unknown = sorted(set(body) - set(fields))
  if unknown:
    raise BadRequest(f'unknown field {unknown[0]!r}; the fields are {", ".join(fields)}')
  if required not in body:
    raise BadRequest(f'missing field {required!r}')
  for name, value in body.items():
    if isinstance(value, bool) or not isinstance(value, fields[name]):
      kind = fields[name].__name__ if isinstance(fields[name], type) else 'number'
      raise BadRequest(f'field {name!r} must be a {kind}, not {type(value).__name__}')
  return body


def make_app(engine, max_batch: int = 16, wait_ms: float = 5.0) -> web.Application:
  """The aiohttp application serving `engine` (inference/engine.py)."""
  app = web.Application(client_max_size=1 << 20)
  batcher = Batcher(engine, max_batch, wait_ms)
  app[BATCHER] = batcher

  async def health(_):
    return web.json_response({'status': 'ok', **engine.describe()})

  async def stats(_):
    return web.json_response(batcher.stats)

  async def completions(request):
    if engine.kind != 'completion':
      return _fail('this run is a classifier; POST to /v1/classify')
    try:
      body = await _json_body(request, COMPLETION_FIELDS, 'prompt')
      options = SamplingOptions(
          max_tokens=body.get('max_tokens', min(DEFAULT_MAX_TOKENS, engine.context_len - 1)),
          temperature=float(body.get('temperature', 0.0)), top_k=body.get('top_k', 0),
          top_p=float(body.get('top_p', 1.0)), seed=body.get('seed', 0))
      problems = options.problems(engine.context_len)
      if problems:
        raise BadRequest(problems[0])
    except BadRequest as e:
      return _fail(str(e))
    completion, batch_size = await batcher.submit('completion', body['prompt'], options)
    return web.json_response({'completion': completion, 'batch_size': batch_size})

  async def classify(request):
    if engine.kind != 'classification':
      return _fail('this run is a language model; POST to /v1/completions')
    try:
      body = await _json_body(request, CLASSIFY_FIELDS, 'text')
    except BadRequest as e:
      return _fail(str(e))
    result, batch_size = await batcher.submit('classification', body['text'])
    return web.json_response({**result, 'batch_size': batch_size})

  @web.middleware
  async def errors_as_json(request, handler):
    try:
      return await handler(request)
    except web.HTTPException as e:  # 404, 405, 413 ... as JSON with a message
      if e.status < 400:
        raise
      return _fail(f'{e.reason}: {request.method} {request.path}', e.status)
    except Exception as e:  # pylint: disable=broad-except  # a bug: 500, the server stays up
      print(f'error serving {request.path}: {type(e).__name__}: {e}', file=sys.stderr)
      return _fail(f'internal error: {type(e).__name__}', 500)

  app.middlewares.append(errors_as_json)
  app.router.add_get('/health', health)
  app.router.add_get('/stats', stats)
  app.router.add_post('/v1/completions', completions)
  app.router.add_post('/v1/classify', classify)

  async def start_worker(app):
    app[WORKER] = asyncio.create_task(batcher.run())

  async def stop_worker(app):  # after the requests in flight are answered
    app[WORKER].cancel()
    batcher.close()

  app.on_startup.append(start_worker)
  app.on_cleanup.append(stop_worker)
  return app


def serve(run_dir, port: int, host: str = '127.0.0.1', quantize: str | None = None,
          max_batch: int = 16, wait_ms: float = 5.0, shutdown_timeout: float = 60.0) -> int:
  """`launch.py serve`: loads the run, then serves until SIGTERM / SIGINT."""
  if not 1 <= max_batch <= 1024 or wait_ms < 0 or not 0 < port < 65536:
    raise UserError(f'--max_batch={max_batch} must be in [1, 1024], --wait_ms={wait_ms} >= 0 '
                    f'and --port={port} in [1, 65535]')
  engine = load_engine(run_dir, quantize)
  print(f'serving {run_dir} (step {engine.step}, {engine.kind}) on http://{host}:{port}',
        file=sys.stderr, flush=True)
  try:
    web.run_app(make_app(engine, max_batch, wait_ms), host=host, port=port,
                shutdown_timeout=shutdown_timeout, print=None, access_log=None)
  except OSError as e:
    raise UserError(f'cannot listen on {host}:{port} ({e.strerror}); pick another --port') from None
  print('server stopped', file=sys.stderr, flush=True)
  return 0
