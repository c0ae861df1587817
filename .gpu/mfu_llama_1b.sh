#!/bin/bash
# llama_1b (configs/llama_1b.py) bfloat16 MFU on one GPU, attention through cuDNN vs XLA vs
# today's chunked path (model.attention_impl), alternating cudnn/xla twice, chunked once.
# MFU is `launch.py bench`'s: PaLM FLOPs (attention not halved) against the chip's published
# dense bf16 peak (H100 SXM: 989 TFLOP/s). Run from the repository root on the GPU machine:
#   run(command='bash .gpu/mfu_llama_1b.sh', carry=['.whl'], timeout_s=540)
# (.whl holds the wheels the device machine cannot download; without it the installed jax is used.)
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit 1
fi
export PYTHONUNBUFFERED=1
python3 -c "import jax; print('jax', jax.__version__, repr(jax.devices()[0].device_kind))"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
BATCH=${BATCH:-8}
for impl in cudnn xla cudnn xla chunked; do
  echo "== llama_1b bf16 b${BATCH}x2048 attention_impl=$impl"
  timeout 110 python3 launch.py bench --config configs/llama_1b.py \
    --config.model.attention_impl=$impl --config.train.batch_size=$BATCH \
    --config.mesh.fsdp=1 --config.sharding.rules=dp --steps 5 2>&1 | grep -v Warn | tail -2
done
