#!/bin/bash
# llama_1b (configs/llama_1b.py) bfloat16 MFU on one GPU, attention through cuDNN
# (jax.nn.dot_product_attention, model.attention_impl=cudnn) vs XLA's (xla) vs the chunked path
# (chunked): cudnn and xla alternated twice, chunked once, then the default (auto: cudnn on a
# GPU in bf16). MFU is `launch.py bench`'s: PaLM FLOPs (attention not halved) against the chip's
# published dense bf16 peak (H100 SXM: 989 TFLOP/s). Run from the repository root on the GPU
# machine (the device tool of this workplace):
#   run(command='bash .gpu/mfu_llama_1b.sh', carry=['.whl'], timeout_s=560)
# .whl holds the pure-Python wheels that machine lacks and cannot download; make it here with
#   pip download --no-deps -d .whl ml_collections==1.1.0 tensorboardX==2.6.5
#   pip download --no-deps -d .whl/pinned flax==0.12.8 optax==0.2.8 orbax-checkpoint==0.12.8
# (.whl/pinned: this repository's locked versions, installed only if the machine's own fail the
# smoke run). The machine's jax and its CUDA plugin are used (jax 0.11.2 on 2026-11-27).
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site
install() { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site "$@"; }
[ -n "$(ls .whl/*.whl 2>/dev/null)" ] && install .whl/*.whl
python3 -c "import jax, flax, optax, orbax.checkpoint as o; print('jax', jax.__version__, 'flax', \
flax.__version__, 'optax', optax.__version__, repr(jax.devices()[0].device_kind))"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
SMOKE="--config.model.n_layers=2 --config.model.d_model=256 --config.model.n_heads=4
  --config.model.n_kv_heads=2 --config.model.d_ff=512 --config.data.seq_len=256"
bench() { timeout "$1" python3 launch.py bench --config configs/llama_1b.py \
  --config.mesh.fsdp=1 --config.sharding.rules=dp "${@:2}" 2>&1 | grep -v Warn | tail -"${TAIL:-2}"; }
echo "== smoke: tiny llama, cudnn"
TAIL=6 bench 90 --config.model.attention_impl=cudnn --config.train.batch_size=2 $SMOKE \
  --steps 2 > /tmp/smoke; cat /tmp/smoke
if ! grep -q tokens/s /tmp/smoke; then
  echo "== smoke failed with the machine's flax/optax/orbax; retrying with the locked ones"
  install .whl/pinned/*.whl
  TAIL=6 bench 90 --config.model.attention_impl=cudnn --config.train.batch_size=2 $SMOKE --steps 2
fi
BATCH=${BATCH:-8}
for impl in cudnn xla cudnn xla chunked auto; do
  echo "== llama_1b bf16 b${BATCH}x2048 attention_impl=$impl"
  bench 100 --config.model.attention_impl=$impl --config.train.batch_size=$BATCH --steps 5
done
