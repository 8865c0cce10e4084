# LCSTS PART II at one budget (docs/headlines.md §7.2); run from the repository root:
#   PATH=.venv/bin:$PATH nice -n 5 bash results/headlines/lcsts_commands.sh
set -e
D=../shared/data/headline_generation/LCSTS_PART_II_via_CLGE
COMMON="--config.data.path=$D/train.tsv --config.data.valid_path=$D/val.tsv
  --config.data.test_path=$D/test.tsv --config.trainer.num_steps=600
  --config.trainer.eval_every=600 --config.trainer.checkpoint_every=600
  --config.trainer.log_every=50 --config.trainer.progress_bar=false
  --config.data.max_text_len=100 --config.decode.max_len=40"
EVAL="--config.mode=eval --config.data.eval_path=$D/test.tsv"
# Training; each run decodes the test split with decode.kind=auto (bi beam / uni beam).
python launch.py headlines --workdir runs/headlines_lcsts_bi $COMMON
python launch.py headlines --workdir runs/headlines_lcsts_uni $COMMON \
  --config.model.interaction=false
python launch.py headlines --workdir runs/headlines_lcsts_bi2 $COMMON \
  --config.two_pass.first_workdir=runs/headlines_lcsts_bi
# Decoders on the trained workdirs (eval writes nothing: its output is kept beside the run).
U=runs/headlines_lcsts_uni
python launch.py headlines --workdir $U $EVAL --config.decode.kind=greedy > $U/eval_greedy_l2r.log
python launch.py headlines --workdir $U $EVAL --config.decode.kind=greedy \
  --config.decode.direction=r2l > $U/eval_greedy_r2l.log
python launch.py headlines --workdir $U $EVAL --config.decode.kind=beam > $U/eval_beam_l2r.log
python launch.py headlines --workdir $U $EVAL --config.decode.kind=beam \
  --config.decode.direction=r2l > $U/eval_beam_r2l.log
python launch.py headlines --workdir $U $EVAL --config.decode.kind=beam \
  --config.decode.stop_rule=exhaustive > $U/eval_beam_l2r_exhaustive.log
python launch.py headlines --workdir $U $EVAL --config.decode.kind=rescore > $U/eval_rescore.log
# The exhaustive n-best (what rescoring re-ranks) with GNMT's length penalty, alone and rescored.
python launch.py headlines --workdir $U $EVAL --config.decode.kind=beam \
  --config.decode.stop_rule=exhaustive --config.decode.alpha=1 > $U/eval_beam_l2r_exhaustive_alpha1.log
python launch.py headlines --workdir $U $EVAL --config.decode.kind=rescore \
  --config.decode.alpha=1 > $U/eval_rescore_alpha1.log
for W in runs/headlines_lcsts_bi runs/headlines_lcsts_bi2; do
  python launch.py headlines --workdir $W $EVAL --config.decode.kind=bi_beam > $W/eval_bi_beam.log
done
python -m experiments.headlines.lcsts_table --runs runs/headlines_lcsts_* \
  --commands results/headlines/lcsts_commands.sh --out results/headlines/lcsts.md
