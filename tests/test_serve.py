"""`launch.py serve` in a subprocess on a free port: health, a completion equal to `sample`'s
greedy output, malformed requests answered 4xx with the server still up, concurrent requests
decoded as one batch, and SIGTERM finishing a request in flight (the classification endpoint on a
real classifier run: tests/test_classification.py)."""

import concurrent.futures
import json
import signal
import subprocess
import time
import urllib.error
import urllib.request

import portpicker
import pytest

import launch
from tests.tiny_run import ROOT, cli_command, cli_env
from tests.tiny_run import shared_trained_run  # noqa: F401  pylint: disable=unused-import


def call(url: str, body=None, method: str | None = None, timeout: float = 120):
  """(status, JSON answer) of a request; `body` a dict (sent as JSON) or bytes."""
  data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
  request = urllib.request.Request(url, data=data, method=method,
                                   headers={'Content-Type': 'application/json'})
  try:
    with urllib.request.urlopen(request, timeout=timeout) as answer:
      return answer.status, json.loads(answer.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


@pytest.fixture(scope='module')
def server(shared_trained_run):
  port = portpicker.pick_unused_port()
  process = subprocess.Popen(
      cli_command(['serve', '--run_dir', str(shared_trained_run), '--port', str(port),
                   '--wait_ms', '300', '--max_batch', '8']),
      cwd=ROOT, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  url = f'http://127.0.0.1:{port}'
  deadline = time.time() + 240
  while True:
    assert process.poll() is None, process.stdout.read()
    try:
      if call(url + '/health', timeout=2)[0] == 200:
        break
    except OSError:
      pass
    assert time.time() < deadline, 'the server did not start'
    time.sleep(0.3)
  yield url, process
  if process.poll() is None:
    process.kill()
    process.wait()


@pytest.mark.slow
def test_health_and_a_completion_equal_to_sample(server, shared_trained_run, capsys):
  url, _ = server
  status, health = call(url + '/health')
  assert status == 200 and health == {'status': 'ok', 'kind': 'completion', 'step': 20,
                                      'context_len': 32}
  status, answer = call(url + '/v1/completions', {'prompt': 'def f', 'max_tokens': 8})
  assert status == 200 and answer['batch_size'] == 1
  capsys.readouterr()
  assert launch.main(['sample', '--run_dir', str(shared_trained_run), '--prompt', 'def f',
                      '--tokens', '8', '--temperature', '0']) == 0
  assert capsys.readouterr().out == 'def f' + answer['completion'] + '\n'


def test_malformed_requests_get_400_and_the_server_stays_up(server):
  url, process = server
  completions = url + '/v1/completions'
  cases = [(b'not json', 'not JSON'), (b'[1, 2]', 'JSON object'),
           ({'max_tokens': 3}, "missing field 'prompt'"),
           ({'prompt': 5}, "'prompt' must be a str"),
           ({'prompt': 'a', 'max_tokens': 'many'}, "'max_tokens' must be a int"),
           ({'prompt': 'a', 'max_tokens': True}, "'max_tokens' must be a int"),
           ({'prompt': 'a', 'temprature': 1}, "unknown field 'temprature'"),
           ({'prompt': 'a', 'max_tokens': 32}, 'max_tokens=32 must be in [1, 31]'),
           ({'prompt': 'a', 'top_p': 0}, 'top_p=0.0 must be in (0, 1]'),
           ({'prompt': 'a', 'temperature': -1}, 'temperature=-1.0 must be >= 0')]
  for body, message in cases:
    status, answer = call(completions, body)
    assert status == 400 and message in answer['error'], (body, answer)
  assert call(url + '/v1/classify', {'text': 'a'}) == (
      400, {'error': 'this run is a language model; POST to /v1/completions'})
  assert call(url + '/nowhere')[0] == 404
  assert call(completions, method='GET')[0] == 405
  assert call(completions, b'x' * (2 << 20))[0] == 413
  assert process.poll() is None and call(url + '/health')[0] == 200
  assert call(completions, {'prompt': 'a', 'max_tokens': 2})[0] == 200


@pytest.mark.slow
def test_concurrent_requests_share_one_batch(server):
  url, _ = server
  before = call(url + '/stats')[1]
  prompts = [f'def function_{i}' for i in range(6)]
  with concurrent.futures.ThreadPoolExecutor(6) as pool:
    answers = list(pool.map(lambda p: call(url + '/v1/completions', {
        'prompt': p, 'max_tokens': 4 + len(p) % 3}), prompts))
  assert all(status == 200 for status, _ in answers)
  assert max(answer['batch_size'] for _, answer in answers) > 1
  after = call(url + '/stats')[1]
  assert after['requests'] - before['requests'] == 6
  assert after['batches'] - before['batches'] < 6 and after['largest_batch'] > 1
  alone = [call(url + '/v1/completions', {'prompt': p, 'max_tokens': 4 + len(p) % 3})[1]
           for p in prompts[:2]]
  assert [a['completion'] for a in alone] == [a['completion'] for _, a in answers[:2]]


def test_sigterm_finishes_the_request_in_flight(server):
  url, process = server
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    pending = pool.submit(call, url + '/v1/completions', {'prompt': 'def ', 'max_tokens': 20})
    time.sleep(0.1)  # the request waits its 300 ms for companions: it is in flight
    process.send_signal(signal.SIGTERM)
    status, answer = pending.result(timeout=120)
  assert status == 200 and len(answer['completion']) > 0
  assert process.wait(timeout=60) == 0
  assert 'server stopped' in process.stdout.read()
