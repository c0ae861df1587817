"""benchmarks/step_variants.py's parsing and interleaving (no model compiled)."""

from benchmarks.step_variants import interleave, parse_variant


def test_variant_text_splits_config_overrides_from_xla_options():
  assert parse_variant('noxnn:xla_cpu_use_xnnpack=false,model.attention_query_chunk=64') == (
      'noxnn', ['--config.model.attention_query_chunk=64'], {'xla_cpu_use_xnnpack': False})
  assert parse_variant('base') == ('base', [], {})


def test_interleave_rotates_the_order_and_times_every_call_but_the_first():
  calls = []
  runners = {name: (lambda name=name: calls.append(name)) for name in 'abc'}
  times = interleave(runners, reps=3)
  assert calls == list('abc') + list('abc') + list('bca') + list('cab')
  assert all(len(t['wall']) == 3 and len(t['cpu']) == 3 for t in times.values())
