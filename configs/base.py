"""Every knob of a run, with its default. Other configs start from `get_config()` here.

Run it as is (a byte-level model on the Python standard library, CPU-sized):

    python launch.py train --config configs/base.py

Any value can be overridden on the command line, e.g. `--config.optim.lr=3e-3`.
Keys and types are fixed here: an override of an unknown key or of the wrong type is an error.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = 'base'  # run directory is <run_root>/<name>
  c.run_root = 'runs'
  c.seed = 0

  # --- model: a decoder-only Transformer (models/transformer.py) ---
  m = c.model = ml_collections.ConfigDict()
  m.kind = 'decoder'  # decoder | encoder (bidirectional) | encoder_decoder (T5-style), see task
  m.vocab_size = 256  # must be >= the tokenizer's vocabulary (checked at start)
  m.vocab_pad_multiple = 1  # embedding rows rounded up to this (e.g. 128) so 'vocab' shards
  m.d_model = 256
  m.n_layers = 4
  m.n_heads = 4
  m.n_kv_heads = 0  # 0: same as n_heads (multi-head); 1: multi-query; else grouped-query
  m.head_dim = 0  # 0: d_model // n_heads
  m.d_ff = 0  # 0: 4*d_model for gelu, 8/3*d_model rounded up to 64 for swiglu
  m.max_len = 256  # longest sequence the model accepts (learned positions table size)
  m.norm = 'rmsnorm'  # rmsnorm | layernorm
  m.norm_eps = 1e-5
  m.position = 'rope'  # rope | learned
  m.rope_theta = 10000.0
  m.rope_scaling_factor = 1.0  # Llama 3.x rope frequency scaling (models/rope.py); 1: none
  m.rope_low_freq_factor = 1.0  # Llama 3.x: wavelengths over original_len / this are divided
  m.rope_high_freq_factor = 4.0  # Llama 3.x: under original_len / this kept; smooth in between
  m.rope_original_max_len = 8192  # Llama 3.x: the context length the model was pretrained at
  m.attention_query_chunk = 128  # causal attention in blocks of this many queries; 0: one block
  m.attention_impl = 'auto'  # auto | chunked | cpu (C++ kernel, one CPU device, float32) | xla |
  #   cudnn (jax.nn.dot_product_attention; GPU, bf16/fp16). auto: cpu where it runs, cudnn on an
  #   NVIDIA GPU in bf16/fp16, else chunked
  m.attention_cache_bytes = -1  # chunked: (batch, head) pairs in groups whose scores fit this
  #                               cache size; -1 auto (1 MiB on CPU, 0 = all at once elsewhere)
  m.matmul_impl = 'auto'  # auto | xla | openblas: float32 products on one CPU device through
  #                        OpenBLAS's sgemm (models/cpu_matmul.py); auto: openblas there, else xla
  m.mlp = 'swiglu'  # swiglu | gelu
  m.use_bias = False  # biases in attention/MLP projections (and LayerNorm)
  m.tie_embeddings = True
  m.dropout = 0.0
  m.init_std = 0.02
  m.dtype = 'float32'  # compute dtype: float32 | bfloat16 | float16
  m.param_dtype = 'float32'
  m.scan_layers = False  # nn.scan over the layer stack (faster compile for deep models)
  m.remat = 'none'  # none | full | dots | dots_no_batch (see models/remat.py)
  m.parameterization = 'sp'  # sp (standard) | mup (maximal update, models/mup.py; README "muP")
  m.mup_base_width = 0  # mup: the d_model the hyperparameters were tuned at (required)
  m.mup_base_head_dim = 0  # mup: head_dim at the base width (0: head_dim * base_width / d_model)
  m.mup_zero_readout = False  # mup: untied output layer starts at zero
  m.mup_zero_query = False  # mup: query projection starts at zero

  # --- data (data/) ---
  d = c.data = ml_collections.ConfigDict()
  d.source = 'stdlib'  # 'stdlib', a text file, a folder, *.jsonl, *.parquet
  d.text_field = 'text'  # field read from JSON Lines / Parquet records
  d.tokenizer = 'bytes'  # bytes | bpe | path/to/tokenizer.json
  d.bpe_vocab_size = 4096  # size of the BPE trained on the training split
  d.validation_fraction = 0.02  # share of documents held out, chosen by a hash of their name
  d.cache_dir = 'data_cache'  # prepared shards live in <cache_dir>/<corpus fingerprint>/ (or gs://)
  d.mirror_dir = 'data_mirror'  # local copies of a gs:// cache_dir's shards, memory-mapped
  d.seq_len = 256  # tokens per training window (model sees seq_len, predicts the next)

  # --- training loop (train/loop.py) ---
  t = c.train = ml_collections.ConfigDict()
  t.steps = 1000
  t.batch_size = 16  # global batch, in sequences
  t.grad_accum_steps = 1  # micro-batches per optimizer step (batch_size must divide)
  t.log_every = 10
  t.eval_every = 200  # 0: only at the end
  t.eval_batches = 8
  t.patience = 0  # early stopping: stop after this many evals without improvement (0: off)
  t.sample_tokens = 200  # generated at the end of the run (0: no sample)
  t.sample_prompt = 'def '
  t.sample_temperature = 0.8
  t.init_from = ''  # fine-tune: start from a run directory or Hugging Face folder's weights
  #                   (step 0, fresh optimizer; model.* and data.tokenizer come from it)
  t.compile_cache_dir = 'auto'  # compiled steps kept for the next run (train/compile_cache.py):
  #                               auto = $JAX_COMPILATION_CACHE_DIR, else
  #                               ~/.cache/scaling-transformers/xla; '' = off
  t.max_consecutive_bad_steps = 10  # stop (exit 4) after this many updates in a row skipped for
  #                                   a non-finite loss or gradient (0: never stop)

  # --- what the model is trained for (train/objectives.py) ---
  a = c.task = ml_collections.ConfigDict()
  a.name = 'lm'  # lm (decoder) | span_corruption (encoder_decoder or encoder) | classify
  a.noise_density = 0.15  # span_corruption: share of tokens corrupted (T5)
  a.mean_span_length = 3.0  # span_corruption: mean length of a corrupted span (T5)
  a.label_field = 'label'  # classify: field (Parquet column) of the label; text: data.text_field
  a.pooling = 'mean'  # classify: mean | first | last token of the backbone's output
  a.init_from = ''  # classify: a run directory whose trained decoder/encoder starts the backbone

  # --- checkpoints (train/checkpoint.py): <run_dir>/checkpoints/<step>/, resumed automatically ---
  k = c.checkpoint = ml_collections.ConfigDict()
  k.every = 100  # save every this many steps (0: only at the end and on SIGTERM)
  k.keep = 3  # keep the newest this many checkpoints
  k.keep_best = False  # also save at every evaluation and keep the lowest validation loss
  k.async_save = True  # write in a background thread; the loop waits only for the copy to host

  # --- optimizer (train/optim.py) ---
  o = c.optim = ml_collections.ConfigDict()
  o.name = 'adamw'  # adamw | adam | sgd | momentum | nesterov | lion | adafactor
  o.lr = 1e-3  # peak learning rate
  o.b1 = 0.9
  o.b2 = 0.0  # 0: the optimizer's own default, 0.95 for adam/adamw, 0.99 for lion (its paper)
  o.eps = 1e-8
  o.momentum = 0.9  # for momentum / nesterov
  o.weight_decay = 0.1  # decoupled and lr-scaled, for every optimizer but adam
  o.decay_norms_and_biases = False  # weight decay on 1-D params (norm scales, biases)
  o.l1 = 0.0  # L1 penalty l1 * sum|w| added to the loss, on the weight-decayed params
  o.l2 = 0.0  # L2 penalty l2 * sum w^2 added to the loss, on the weight-decayed params
  o.clip_norm = 1.0  # clip gradients by global norm (0: off)
  o.schedule = 'cosine'  # constant | cosine | linear | rsqrt | wsd
  o.warmup_steps = 100
  o.decay_steps = 0  # 0: train.steps
  o.min_lr_ratio = 0.1  # final lr = min_lr_ratio * lr (cosine, linear, wsd)
  o.wsd_decay_fraction = 0.2  # wsd: share of steps spent in the final decay

  # --- magnitude pruning during training (train/pruning.py; Zhu & Gupta 2017 cubic schedule) ---
  p = c.prune = ml_collections.ConfigDict()
  p.sparsity = 0.0  # final fraction of zeros in every projection matrix (0: no pruning)
  p.start_step = 0  # first pruning point (an update count)
  p.end_step = 0  # where the sparsity reaches prune.sparsity (0: train.steps)
  p.every = 100  # steps between pruning points; pruned weights stay zero in between

  # --- device mesh (sharding/mesh.py); -1 means "the rest of the devices" ---
  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1
  c.mesh.fsdp = 1
  c.mesh.tensor = 1
  c.mesh.dcn_data = 1  # slices (multi-slice pods, GPU hosts) along 'data' over the slow network
  c.mesh.platform = 'auto'  # 'auto' | 'cpu' | 'gpu' | 'tpu': a run that finds other devices
                           # stops and names the install (sharding/platform.py)

  # --- logical-to-mesh axis rules (sharding/rules.py has the table) ---
  c.sharding = ml_collections.ConfigDict()
  c.sharding.rules = 'dp'  # dp | fsdp | dp_fsdp | tp | fsdp_tp | dp_fsdp_tp

  # --- several processes (sharding/distributed.py) ---
  c.distributed = ml_collections.ConfigDict()
  c.distributed.coordinator = 'auto'  # 'auto': detect TPU pods/SLURM, else one process;
  #                                     'none': one process; 'host:port': explicit
  c.distributed.num_processes = 0  # 0: detect (with 'auto'); set it with an explicit address
  c.distributed.process_id = -1  # -1: detect (with 'auto'); set it with an explicit address
  c.distributed.timeout_s = 300  # give up (one clear line, exit 3) if peers do not join by then

  # --- scaling studies (models/counting.py, experiments/ladder.py, experiments/scaling_fits.py) ---
  s = c.scaling = ml_collections.ConfigDict()
  s.flops_convention = 'chinchilla'  # training FLOPs per token: 6n | 6n_attention | chinchilla
  s.ladder_aspect_ratio = 32.0  # model ladders: d_model / n_layers aimed at (within a factor 2)
  s.ladder_head_dim = 64  # model ladders: head size; widths are multiples of it

  return c
