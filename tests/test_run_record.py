"""The run record's provenance: read when the run starts, kept when files change while it runs.
(The whole record from a real run: tests/test_train.py, `_check_run_record`.)"""
from asmp_jax import files, run_record


def test_record_keeps_what_the_run_started_from(tmp_path):
  config = tmp_path / "c.py"
  config.write_text("A = 1\n")
  started = run_record.provenance(str(config))
  assert started["config_sha256"] == files.sha256_file(str(config))
  outcome = {"wall_s": {"build": 1.0, "train": 2.0, "eval": 3.0}, "steps": 5, "start_step": 0}
  same = run_record.build(argv=["launch.py"], config_file=str(config), overrides={},
                          outcome=outcome, started=started)
  assert same["config_sha256"] == started["config_sha256"] and same["commit"] == started["commit"]
  assert "config_sha256_at_end" not in same and same["wall_s"]["total"] == 6.0
  config.write_text("A = 2\n")  # edited while the run trained
  changed = run_record.build(argv=["launch.py"], config_file=str(config), overrides={},
                             outcome=outcome, started=dict(started, commit="abc123"))
  assert changed["commit"] == "abc123"
  assert changed["config_sha256"] == started["config_sha256"]
  assert changed["config_sha256_at_end"] == files.sha256_file(str(config))
  assert changed["config_sha256_at_end"] != changed["config_sha256"]


def test_evaluation_file_is_named_relative_to_where_the_run_started(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  inside = tmp_path / "runs" / "r" / "eval_test_step5.json"
  assert run_record.portable_path(str(inside)) == "runs/r/eval_test_step5.json"
  assert run_record.portable_path("runs/r/e.json") == "runs/r/e.json"
  outside = tmp_path.parent / "elsewhere" / "e.json"
  assert run_record.portable_path(str(outside)) == str(outside)
  config = tmp_path / "c.py"
  config.write_text("A = 1\n")
  outcome = {"wall_s": {"train": 2.0}, "steps": 5, "start_step": 0}
  record = run_record.build(argv=["launch.py"], config_file=str(config), overrides={},
                            outcome=outcome, evaluation_file=str(inside))
  assert record["evaluation_file"] == "runs/r/eval_test_step5.json"
