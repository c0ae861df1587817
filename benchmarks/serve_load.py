"""Load test of `launch.py serve` on loopback: many concurrent clients against one at a time.

    python -m benchmarks.serve_load --run_dir runs/tiny --clients 16 --requests 128

Starts the server on a free port (or uses --url), warms up every batch bucket, then runs:
- one at a time: one client sends --sequential requests, each after the last one's answer;
- concurrent: --clients clients each send requests back to back until --requests are answered.
The two phases alternate --repeats times and the faster run of each is reported.
Every request is a greedy completion of --max_tokens tokens after a prompt drawn from a fixed
list (21 to 30 bytes: one prompt-length bucket). Reports requests/s and new tokens/s of each
phase, latency p50/p90/p99, and the batch sizes the server decoded (its /stats), as text and
with --json as one JSON object.
"""

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time

import aiohttp
import numpy as np

PROMPTS = ['def read_config(path):\n', 'import os\nimport sys\n', 'class Base:\n    def __init__(s',
           '        return self._value', '    if x is None:\n        ',
           'for i in range(len(items)):',
           '"""Return the first item', 'with open(path) as f:\n    ']  # 21 to 30 bytes


async def one(session, url, index, max_tokens) -> float:
  body = {'prompt': PROMPTS[index % len(PROMPTS)], 'max_tokens': max_tokens}
  start = time.perf_counter()
  async with session.post(url + '/v1/completions', json=body) as answer:
    assert answer.status == 200, await answer.text()
    await answer.json()
  return time.perf_counter() - start


async def phase(url, clients: int, requests: int, max_tokens: int) -> dict:
  """`clients` closed-loop clients until `requests` answers; latencies and rates."""
  latencies, counter = [], iter(range(requests))
  async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
    async def client():
      for index in counter:
        latencies.append(await one(session, url, index, max_tokens))
    start = time.perf_counter()
    await asyncio.gather(*[client() for _ in range(clients)])
    wall = time.perf_counter() - start
  ms = np.asarray(latencies) * 1000
  return {'clients': clients, 'requests': requests, 'wall_s': wall,
          'requests_per_s': requests / wall, 'tokens_per_s': requests * max_tokens / wall,
          'p50_ms': float(np.percentile(ms, 50)), 'p90_ms': float(np.percentile(ms, 90)),
          'p99_ms': float(np.percentile(ms, 99))}


async def stats(url) -> dict:
  async with aiohttp.ClientSession() as session:
    async with session.get(url + '/stats') as answer:
      return await answer.json()


async def wait_ready(url, process, timeout: float = 600) -> None:
  deadline = time.time() + timeout
  async with aiohttp.ClientSession() as session:
    while True:
      if process is not None and process.poll() is not None:
        raise RuntimeError('the server exited')
      try:
        async with session.get(url + '/health') as answer:
          if answer.status == 200:
            return
      except aiohttp.ClientError:
        pass
      if time.time() > deadline:
        raise RuntimeError('the server did not start')
      await asyncio.sleep(0.5)


async def run(args, url, process) -> dict:
  await wait_ready(url, process)
  for size in (1, 2, 4, 8, 16, 32):  # compile every batch bucket the concurrent phase can reach
    if size <= max(args.clients, 1) * 2:
      await phase(url, size, size, args.max_tokens)
  sequential, concurrent = None, None
  for _ in range(args.repeats):  # alternate the phases; keep the faster run of each
    trial = await phase(url, 1, args.sequential, args.max_tokens)
    if sequential is None or trial['requests_per_s'] > sequential['requests_per_s']:
      sequential = trial
    counts_before = await stats(url)
    trial = await phase(url, args.clients, args.requests, args.max_tokens)
    if concurrent is None or trial['requests_per_s'] > concurrent['requests_per_s']:
      concurrent, before, after = trial, counts_before, await stats(url)
  sizes = {k: v - before['batch_sizes'].get(k, 0) for k, v in after['batch_sizes'].items()
           if v - before['batch_sizes'].get(k, 0)}
  concurrent['batches'] = after['batches'] - before['batches']
  concurrent['mean_batch'] = args.requests / max(concurrent['batches'], 1)
  concurrent['batch_sizes'] = sizes
  return {'sequential': sequential, 'concurrent': concurrent,
          'speedup': concurrent['requests_per_s'] / sequential['requests_per_s']}



def _free_port() -> int:
  """A TCP port nothing listens on now (the kernel picks it)."""
  with socket.socket() as probe:
    probe.bind(('127.0.0.1', 0))
    return probe.getsockname()[1]

def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--run_dir', default='runs/tiny', help='the run to serve')
  parser.add_argument('--url', default=None, help='an already running server instead')
  parser.add_argument('--clients', type=int, default=16, help='concurrent clients')
  parser.add_argument('--requests', type=int, default=128, help='requests of the concurrent phase')
  parser.add_argument('--sequential', type=int, default=16, help='requests sent one at a time')
  parser.add_argument('--max_tokens', type=int, default=32, help='new tokens per request')
  parser.add_argument('--max_batch', type=int, default=16, help="the server's --max_batch")
  parser.add_argument('--wait_ms', type=float, default=5.0, help="the server's --wait_ms")
  parser.add_argument('--repeats', type=int, default=3, help='alternating runs of the two '
                      'phases; the faster of each is reported (the machine may be shared)')
  parser.add_argument('--json', action='store_true', help='print one JSON object')
  args = parser.parse_args()
  process, url = None, args.url
  if url is None:
    port = _free_port()
    url = f'http://127.0.0.1:{port}'
    process = subprocess.Popen([sys.executable, 'launch.py', 'serve', '--run_dir', args.run_dir,
                                '--port', str(port), '--max_batch', str(args.max_batch),
                                '--wait_ms', str(args.wait_ms)])
  try:
    result = asyncio.run(run(args, url, process))
  finally:
    if process is not None:
      process.terminate()
      process.wait(timeout=120)
  if args.json:
    print(json.dumps(result))
    return
  for name in ('sequential', 'concurrent'):
    r = result[name]
    print(f"{name:>10}: {r['clients']:>3} clients, {r['requests']} requests in {r['wall_s']:.1f} s:"
          f" {r['requests_per_s']:.2f} requests/s, {r['tokens_per_s']:,.0f} new tokens/s, latency"
          f" p50 {r['p50_ms']:.0f} ms, p90 {r['p90_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms")
  c = result['concurrent']
  print(f"throughput x{result['speedup']:.2f}; {c['batches']} batches, mean size "
        f"{c['mean_batch']:.1f}, sizes {c['batch_sizes']}")


if __name__ == '__main__':
  main()
