"""benchmarks/compile_depth.py: compile times with and without scan, and every remat policy's
temporary memory and step time, for a tiny model."""

import pytest

from benchmarks import compile_depth
from models.config import REMAT_POLICIES
from train.config import load_config


@pytest.mark.slow  # eight compiles: about 30 s on a quiet 2-core CPU
def test_tables_cover_every_depth_scan_and_remat_policy():
  config = load_config('configs/tiny.py', [
      '--config.model.d_model=32', '--config.model.n_layers=2', '--config.model.n_heads=2',
      '--config.model.max_len=32', '--config.data.seq_len=32', '--config.train.batch_size=4'])
  compile_rows = compile_depth.compile_table(config, [1, 2])
  assert [(r['layers'], r['scan_layers']) for r in compile_rows] == [
      (1, False), (1, True), (2, False), (2, True)]
  assert all(r['compile_s'] > 0 and r['temp_bytes'] > 0 for r in compile_rows)
  remat_rows = compile_depth.remat_table(config, steps=1)
  assert [r['remat'] for r in remat_rows] == list(REMAT_POLICIES)
  by_policy = {r['remat']: r['temp_bytes'] for r in remat_rows}
  assert by_policy['full'] < by_policy['none']  # keeping less means fewer temporary bytes
  text = compile_depth.format_tables(config, compile_rows, remat_rows)
  assert '| 2 | True |' in text and '| dots_no_batch |' in text
