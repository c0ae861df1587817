"""The batching queue of `launch.py serve`: concurrent requests share decode steps.

A request waits in an asyncio queue. The worker takes the first one, then collects whatever
else arrives within `wait_ms` (up to `max_batch` requests), groups them by what must be equal
for one decode (kind, and for completions temperature, top-k, top-p and seed; `max_tokens` may
differ: the batch decodes to the largest and each row keeps its own), and runs each group as one
batch on a single worker thread, so the event loop keeps accepting requests meanwhile: requests
that arrive during a decode form the next batch. Each result carries the size of the batch it
was decoded in; `stats` counts requests and batches by size.
"""

import asyncio
import collections
import concurrent.futures
import dataclasses
from typing import Any

from inference.engine import SamplingOptions


@dataclasses.dataclass
class Request:
  kind: str  # 'completion' | 'classification'
  text: str
  options: SamplingOptions | None
  future: asyncio.Future

  @property
  def group(self) -> tuple:
    if self.kind == 'classification':
      return (self.kind,)
    return (self.kind,) + self.options.batch_key


class Batcher:
  """`await batcher.submit(kind, text, options)` -> (result, batch size)."""

  def __init__(self, engine, max_batch: int = 16, wait_ms: float = 5.0):
    self.engine, self.max_batch, self.wait_s = engine, max_batch, wait_ms / 1000
    self.queue: asyncio.Queue[Request] = asyncio.Queue()
    self.thread = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                        thread_name_prefix='decode')
    self.batch_sizes = collections.Counter()
    self.requests = 0

  @property
  def stats(self) -> dict[str, Any]:
    return {'requests': self.requests, 'batches': sum(self.batch_sizes.values()),
            'largest_batch': max(self.batch_sizes, default=0),
            'batch_sizes': {str(k): v for k, v in sorted(self.batch_sizes.items())},
            'queued': self.queue.qsize()}

  async def submit(self, kind: str, text: str, options: SamplingOptions | None = None):
    future = asyncio.get_running_loop().create_future()
    await self.queue.put(Request(kind, text, options, future))
    return await future

  async def _collect(self) -> list[Request]:
    pending = [await self.queue.get()]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + self.wait_s
    while len(pending) < self.max_batch:
      if not self.queue.empty():
        pending.append(self.queue.get_nowait())
        continue
      left = deadline - loop.time()
      if left <= 0:
        break
      try:
        pending.append(await asyncio.wait_for(self.queue.get(), left))
      except asyncio.TimeoutError:
        break
    return pending

  def _decode(self, group: list[Request]) -> list:
    texts = [r.text for r in group]
    if group[0].kind == 'classification':
      return self.engine.classify(texts)
    widest = max(r.options.max_tokens for r in group)
    options = dataclasses.replace(group[0].options, max_tokens=widest)
    return self.engine.complete(texts, options, [r.options.max_tokens for r in group])

  async def run(self) -> None:
    """The worker: forever collect, group, decode, answer (cancel the task to stop it)."""
    loop = asyncio.get_running_loop()
    while True:
      groups = collections.defaultdict(list)
      for request in await self._collect():
        groups[request.group].append(request)
      for group in groups.values():
        self.requests += len(group)
        self.batch_sizes[len(group)] += 1
        try:
          results = await loop.run_in_executor(self.thread, self._decode, group)
        except Exception as e:  # pylint: disable=broad-except  # answered as a 500, server stays
          for request in group:
            if not request.future.done():
              request.future.set_exception(e)
          continue
        for request, result in zip(group, results):
          if not request.future.done():  # the client may have gone
            request.future.set_result((result, len(group)))

  def close(self) -> None:
    self.thread.shutdown(wait=True)
