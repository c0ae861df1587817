"""benchmarks/step_profile.py's trace and HLO parsing (no model compiled)."""

from benchmarks.step_profile import hlo_ops, model_part, op_durations, summarise

HLO = '''%fused_computation.7 (param_0: f32[8,4], param_1: f32[4,16]) -> f32[8,16] {
  %param_0 = f32[8,4]{1,0} parameter(0)
  %param_1 = f32[4,16]{1,0} parameter(1)
  ROOT %dot.1 = f32[8,16]{1,0} dot(%param_0, %param_1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

ENTRY %main (x: f32[8,4], w: f32[4,16]) -> f32[8,16] {
  %ynn_fusion.7 = f32[8,16]{1,0} fusion(%x, %w), kind=kCustom, calls=%fused_computation.7, metadata={op_name="jit(train_step)/transpose(jvp(Transformer))/layer_3/mlp/up/dot_general"}
  ROOT %tanh_fusion = f32[8,16]{1,0} fusion(%ynn_fusion.7), kind=kLoop, calls=%fused_computation.8, metadata={op_name="jit(train_step)/jvp(Transformer)/layer_3/mlp/tanh"}
}
'''


def test_matrix_products_are_counted_from_the_fused_computation():
  ops = hlo_ops(HLO)
  assert ops['ynn_fusion.7']['flops'] == 2 * 8 * 16 * 4
  assert ops['ynn_fusion.7']['dots'] == '[8, 16] K=4'
  assert ops['tanh_fusion']['flops'] == 0 and ops['tanh_fusion']['shape'] == '8,16'


def test_parts_split_forward_from_backward_and_name_the_scope():
  assert model_part('jit(train_step)/transpose(jvp(Transformer))/layer_3/mlp/up/dot_general') == (
      'backward', 'mlp')
  assert model_part('jit(train_step)/jvp(Transformer)/layer_0/attn_norm/mul') == (
      'forward', 'attn_norm')


def test_durations_are_summed_per_op_and_divided_by_the_steps():
  events = [{'ph': 'X', 'name': 'ynn_fusion.7', 'dur': 3000},
            {'ph': 'X', 'name': 'ynn_fusion.7', 'dur': 1000},
            {'ph': 'i', 'name': 'ynn_fusion.7'}, {'ph': 'X', 'name': 'tanh_fusion', 'dur': 2000}]
  durations = op_durations(events, steps=2)
  assert durations == {'ynn_fusion.7': 2.0, 'tanh_fusion': 1.0}
  table = summarise(durations, hlo_ops(HLO))
  assert 'backward mlp matmul' in table and 'forward mlp elementwise' in table
  assert '[8, 16] K=4' in table
