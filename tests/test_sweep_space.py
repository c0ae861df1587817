"""Sweep definitions: every bad search space or setting stops the sweep before any trial runs
(one line, exit 2, nothing written); good ones parse into the dimensions Optuna gets, and sweep
settings are overridden on the command line like any config value."""

import optuna
import pytest

import launch
from errors import UserError
from experiments import sweep_space, sweep_study
from tests.sweep_helpers import sweep_dir, write_sweep_config
from train.config import load_config

GOOD = {'optim.lr': 'choice(1e-3, 1e-2)'}

BAD_SPACES = [
    ({'optim.warmup': 'choice(1, 2)'}, {}, "unknown config key 'optim.warmup'; did you mean "
     "'optim.warmup_steps'?"),
    ({'optim.lr': 'choice("fast", "slow")'}, {}, "'fast' is not a float"),
    ({'model.n_layers': 'choice(1.5, 2)'}, {}, '1.5 is not a int'),
    ({'model.scan_layers': 'choice(1, 0)'}, {}, '1 is not a bool'),
    ({'model.n_layers': 'uniform(1.0, 4.0)'}, {'sampler': 'random', 'trials': 2},
     'uniform() needs a float key'),
    ({'optim.lr': 'int(1, 4)'}, {'sampler': 'random', 'trials': 2}, 'int() needs an integer key'),
    ({'optim.lr': 'uniform(0.1, 0.1)'}, {'sampler': 'random', 'trials': 2}, 'an empty range'),
    ({'model.n_layers': 'int(4, 2)'}, {'sampler': 'random', 'trials': 2}, 'an empty range'),
    ({'optim.lr': 'choice()'}, {}, 'an empty choice'),
    ({'optim.lr': 'choice(1e-3, 1e-3)'}, {}, 'listed twice'),
    ({'optim.lr': 'loguniform(0.0, 0.1)'}, {'sampler': 'random', 'trials': 2},
     'a log range must stay above zero'),
    ({'optim.b2': 'uniform(-0.5, 0.99, log=True)'}, {'sampler': 'tpe', 'trials': 2},
     'a log range must stay above zero'),
    ({'optim.lr': 'choice(0.0, 1e-3, log=True)'}, {}, 'a log axis needs positive numbers'),
    ({'optim.lr': 'loguniform(1e-4, 1e-1)'}, {}, 'a range, and a grid needs a finite list'),
    ({'optim.lr': 'normal(0, 1)'}, {}, "unknown kind 'normal'"),
    ({'optim.lr': 'choice(1e-3'}, {}, 'write one of choice(...)'),
    ({'optim.lr': 'choice(lr)'}, {}, 'with literal values'),
    ({'optim.lr': 'uniform(0.1, 0.2, steps=3)'}, {'sampler': 'random', 'trials': 2},
     "takes no argument 'steps'"),
    ({'model.n_layers': 'int(1, 8, step=2, log=True)'}, {'sampler': 'random', 'trials': 2},
     'cannot have a step'),
    ({'name': 'choice("a", "b")'}, {}, 'name cannot be swept'),
    ({'data.seq_len': 'choice(16, 64)'}, {}, 'the sweep point data.seq_len=64 makes an invalid '
     'run: data.seq_len=64 exceeds model.max_len=32'),
    ({}, {}, 'sweep.space is empty'),
    (GOOD, {'sampler': 'bayes'}, "sweep.sampler='bayes' is not one of grid, random, tpe"),
    (GOOD, {'pruner': 'hyperband'}, "sweep.pruner='hyperband' is not one of none, median"),
    (GOOD, {'metric': 'accuracy'}, "sweep.metric='accuracy' is not one of validation_loss"),
    (GOOD, {'trials': 3}, 'sweep.trials=3 exceeds the 2 points of the grid'),
    (GOOD, {'sampler': 'random'}, 'sweep.trials=0: give the number of trials'),
    (GOOD, {'heartbeat_s': 5, 'stale_after_s': 5}, 'must exceed sweep.heartbeat_s=5'),
]


@pytest.mark.parametrize('space, settings, message', BAD_SPACES,
                         ids=[m[:40] for _, _, m in BAD_SPACES])
def test_a_bad_sweep_stops_before_any_trial(tmp_path, capsys, space, settings, message):
  config = write_sweep_config(tmp_path, space, **settings)
  with pytest.raises(UserError) as error:
    sweep_study.build_sweep(load_config(str(config)))
  assert message in str(error.value)
  capsys.readouterr()
  assert launch.main(['sweep', '--config', str(config)]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith('error: ') and message in err[0]
  assert not (tmp_path / 'runs').exists()  # nothing was created


def test_command_line_overrides_reach_the_sweep_section(tmp_path):
  config = write_sweep_config(tmp_path, {'optim.lr': 'choice(1e-3, 3e-3, 1e-2)',
                                         'optim.warmup_steps': 'choice(0, 5)'})
  sweep = sweep_study.build_sweep(load_config(str(config)))
  assert sweep.trials == 6 and sweep.sweep_cfg.sampler == 'grid'
  sweep = sweep_study.build_sweep(load_config(str(config), [
      '--config.sweep.trials=4', "--config.sweep.space.optim.lr=loguniform(1e-4, 1e-1)",
      '--config.sweep.sampler=tpe', '--config.sweep.pruner=median']))
  assert sweep.trials == 4
  lr, warmup = sweep.dims
  assert lr.distribution() == optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)
  assert warmup.distribution() == optuna.distributions.CategoricalDistribution((0, 5))
  assert isinstance(sweep_study.make_pruner(sweep.sweep_cfg), optuna.pruners.MedianPruner)
  assert sweep.directory == tmp_path / 'runs' / 'sweeps' / 'sweep'
  assert sweep.storage_url == f'sqlite:///{sweep.directory / "study.db"}'
  assert 'sweep' not in sweep.run_config  # trials get the run config alone
  assert not sweep_dir(tmp_path).exists()


def test_dimensions_parse_to_optuna_distributions():
  parse = sweep_space.parse_dimension
  assert parse('k', 'loguniform(1e-4, 1e-1)', 0.1).distribution() == \
      optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)
  assert parse('k', 'uniform(0.9, 0.99)', 0.1).distribution() == \
      optuna.distributions.FloatDistribution(0.9, 0.99)
  assert parse('k', 'int(16, 256, log=True)', 1).distribution() == \
      optuna.distributions.IntDistribution(16, 256, log=True)
  assert parse('k', 'int(0, 100, step=10)', 1).distribution() == \
      optuna.distributions.IntDistribution(0, 100, step=10)
  choice = parse('k', 'choice(1, 3e-3, log=True)', 0.1)  # ints become floats for a float key
  assert choice.values == (1.0, 3e-3) and all(isinstance(v, float) for v in choice.values)
  assert choice.log and parse('k', 'choice("gelu", "swiglu")', 'gelu').values == ('gelu',
                                                                                   'swiglu')


def test_a_grid_is_every_combination_in_order(tmp_path):
  config = write_sweep_config(tmp_path, {'optim.lr': 'choice(1e-3, 1e-2)',
                                         'optim.warmup_steps': 'choice(0, 5, 10)'})
  sweep = sweep_study.build_sweep(load_config(str(config)))
  points = sweep_space.grid_points(sweep.dims)
  assert points == [{'optim.lr': lr, 'optim.warmup_steps': w}
                    for lr in (1e-3, 1e-2) for w in (0, 5, 10)]
  trial = sweep_space.trial_config(sweep.run_config, points[4], 'sweep-trial_0004')
  assert (trial.optim.lr, trial.optim.warmup_steps, trial.name) == (1e-2, 5, 'sweep-trial_0004')
  assert sweep.run_config.optim.lr != 1e-2 or sweep.run_config.optim.warmup_steps != 5
